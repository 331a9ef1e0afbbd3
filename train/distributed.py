"""Training across processes on torch.distributed: FSDP2 sharding under ``torchrun``.

Launched by ``torchrun --nproc-per-node N`` (one host, or many with its rendezvous flags), every
stage runs unchanged: :func:`setup` joins the process group (nccl when the run's device is CUDA,
each rank on its ``LOCAL_RANK`` GPU; gloo on CPUs), the shared loop shards the model with
``fully_shard`` (every block of every ``nn.ModuleList`` its own unit, the rest under one root;
bf16/fp16 runs gather parameters in the compute dtype and reduce gradients in float32), and each
rank computes the loss on its share of the global batch.
With one process every function here is the identity, so nothing else branches on the world size.

Three rules keep N ranks equal to one process on the same global batch:
- a batch is drawn whole from the run's seed stream, then rank r keeps rows r, r+N, ... (``share``);
- every mean of a loss divides by the global count (``global_count``, an all-reduce), and FSDP
  averages gradients over ranks, so the step is the one-process step up to float rounding;
- forward passes go through one root module (``LossRunner``), because the stages call heads and
  embeddings directly rather than ``model.forward``: FSDP2 gathers a unit's parameters in its
  forward hook, so the root wraps the whole loss computation. Generation and scoring outside the
  loss run inside :func:`full_weights`, with every unit gathered once, so ranks that decode
  different lengths never wait on each other's collectives.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from torch import Tensor, nn

RUNNER_ATTR = "_latent_search_fsdp_runner"


# ---------------------------------------------------------------- the process group
def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torch.distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def setup(device=None, timeout_minutes: int = 120) -> tuple[int, int]:
    """Join the process group when launched by torchrun with several processes; else nothing.

    ``device``: the run's (a ``torch.device``; None: the CPU). On CUDA each rank takes its
    ``LOCAL_RANK`` GPU and the group is nccl; on CPUs it is gloo.
    Packed oneDNN linears are an inference cache keyed by weight tensors; FSDP refills gathered
    weights in place, which the cache would not notice, so they are off in sharded runs.
    """
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return world()
    os.environ["LATENT_SEARCH_PACKED_LINEAR"] = "0"
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(torch.device(device))
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return world()


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def share(items: list) -> list:
    """This rank's rows of a global batch: rows r, r+N, ... (all of them with one process)."""
    rank, size = world()
    return items[rank::size]


def denominator(count: Tensor) -> Tensor:
    """The denominator of a loss mean over the global batch (at least 1), over the world size.

    A rank's loss sum / denominator(its count) is its share of the one-process mean times N; FSDP
    averages gradients over the N ranks, which gives back the one-process gradient, and the mean
    of the ranks' values is the one-process value. Every rank must call it (an all-reduce).
    """
    import torch.distributed as dist

    size = world()[1]
    total = count.detach().clone().float()
    if size > 1:
        dist.all_reduce(total)
    return (total.clamp(min=1) / size).to(count.dtype)


def global_sum(x: Tensor) -> Tensor:
    """``x`` summed over ranks (a detached copy; ``x`` itself with one process)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total


def agree(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 and give every rank its result, or its error (re-raised everywhere
    with the same message), so a refused run stops all ranks instead of leaving them waiting."""
    import torch.distributed as dist

    from cola_models.errors import ColaError

    if world()[1] == 1:
        return fn()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except ColaError as err:
            box[0] = ("error", str(err))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise ColaError(value)
    return value


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` with one process)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return [obj]
    out: list[Any] = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def mean_metrics(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """Each metric averaged over the ranks that report it (equal shares: the global mean);
    None where no rank has a value (an AUC without any mixed group)."""
    rows = gather_objects(metrics)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    out: dict[str, float | None] = {}
    for k in keys:
        values = [float(row[k]) for row in rows if row.get(k) is not None]  # host: Python floats
        out[k] = sum(values) / len(values) if values else None
    return out


def map_chunks(n_chunks: int, fn: Callable[[int], list], done: Callable[[list], None]) -> None:
    """Compute ``fn(c)`` for every chunk c, dealt round-robin to the ranks, and hand each round's
    results to ``done`` in chunk order on rank 0. Each chunk seeds itself from its index, so the
    results do not depend on the world size."""
    size = world()[1]
    rank = world()[0]
    for first in range(0, n_chunks, size):
        mine = first + rank
        result = fn(mine) if mine < n_chunks else []
        for part in gather_objects(result):
            if is_main():
                done(part)


# ---------------------------------------------------------------- FSDP2
class LossRunner(nn.Module):
    """The FSDP root: ``runner(fn)`` runs ``fn`` (a loss computation on the model) as this
    module's forward, so FSDP gathers the root's parameters for it and reduces their gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[[], Any]) -> Any:
        return fn()


def blocks(model: nn.Module) -> list[nn.Module]:
    """The sharding units: every element of every ``nn.ModuleList`` (transformer layers, head
    blocks, merge MLPs) that holds parameters."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.ModuleList):
            out += [b for b in m if any(True for _ in b.parameters())]
    return out


def checkpoint_blocks(model: nn.Module) -> None:
    """Activation checkpointing on every block (once; before sharding, as FSDP2 expects): a
    block keeps only its input and recomputes the rest when the backward pass reaches it."""
    from torch.distributed._composable import checkpoint

    if getattr(model, "_latent_search_checkpointed", False):
        return
    if hasattr(model, RUNNER_ATTR):
        from cola_models.errors import ColaError

        raise ColaError("activation checkpointing must be chosen before the model is sharded")
    for block in blocks(model):
        checkpoint(block)
    object.__setattr__(model, "_latent_search_checkpointed", True)


def shard(model: nn.Module, compute=None) -> Callable[[Callable[[], Any]], Any]:
    """Shard ``model`` (once; later phases reuse it) and return how to run a loss on it.

    With one process this is ``fn()``. Frozen parameters are sharded too: they are read in every
    forward and FSDP gathers them with the rest. ``compute`` (a torch dtype other than float32):
    parameters are gathered in it for the forward pass, gradients reduced in float32, and the
    sharded master weights and optimizer state stay float32.
    """
    if world()[1] == 1:
        return lambda fn: fn()
    runner = getattr(model, RUNNER_ATTR, None)
    if runner is None:
        import torch
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        kind = next(model.parameters()).device.type  # the run's device: cuda (nccl) or cpu
        mesh = init_device_mesh(kind, (world()[1],))
        policy = MixedPrecisionPolicy()
        if compute is not None and compute != torch.float32:
            policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
        for block in blocks(model):
            fully_shard(block, mesh=mesh, mp_policy=policy)
        runner = LossRunner(model)
        fully_shard(runner, mesh=mesh, mp_policy=policy)
        object.__setattr__(model, RUNNER_ATTR, runner)  # not a submodule: no cycle
    else:
        _retrainable(runner)
    return runner


def _retrainable(runner: nn.Module) -> None:
    """A later phase trains other parameters (stage 1: the IDM, then the policy). FSDP2 fixes
    each unit's gradient-reduction dtype at its first forward from the parameters trainable
    then; a unit frozen in that phase would reduce its new gradients in bf16 and refuse them.
    Re-derive those dtypes from today's trainable set (FSDP2's own lazy-init step; private API,
    torch 2.4-2.13, skipped where it is absent)."""
    from torch.distributed.fsdp import FSDPModule

    for unit in runner.modules():
        if not isinstance(unit, FSDPModule) or not hasattr(unit, "_get_fsdp_state"):
            continue
        for group in getattr(unit._get_fsdp_state(), "_fsdp_param_groups", []) or []:
            if hasattr(group, "_init_mp_dtypes"):
                group._init_mp_dtypes()


@contextlib.contextmanager
def full_weights(model: nn.Module) -> Iterator[None]:
    """Every FSDP unit of ``model`` gathered for the block: generation and scoring outside the
    loss, whose per-rank lengths differ, then run without any collective. No-op when unsharded."""
    from torch.distributed.fsdp import FSDPModule

    runner = getattr(model, RUNNER_ATTR, None)
    if runner is None:
        yield
        return
    units = [m for m in runner.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True)

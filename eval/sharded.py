"""Evaluation across many processes, on torch.distributed (``torchrun``) or as a job array.

Batches of problems, as one process forms them, are dealt round-robin to ranks (rank i of n takes
batches i, i+n, ...); each rank evaluates its share into ``OUT/shard-i-of-n`` (a resumable run directory with its own lock),
and the merge writes ``OUT/results.jsonl`` and ``summary.json`` in problem order, the files one
process would have written. Under ``torchrun`` the ranks meet at a gloo barrier and rank 0
merges; where ranks cannot talk (Slurm job arrays), each job runs ``eval --shard i/n`` and one
more runs ``eval --merge-shards n`` with the same settings.

A problem's samples come from its batch's random stream, and every batch keeps its problems, so
sampled searches (sample, best-of-n, mcts with Gumbel) give one process's records too, at the same
``--batch-size``. Deviation to know: the stream is the batch's, not the problem's, so another
batch size (or a resumed run whose batches are formed from what is left) samples differently.
"""

from __future__ import annotations

import os
from datetime import timedelta

from cola_models.errors import ColaError


def torchrun_rank() -> tuple[int, int] | None:
    """(rank, world size) when launched by torchrun with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ.get("RANK", "0")), world


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ColaError(f"--shard {text!r} must read I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ColaError(f"--shard {text}: need 0 <= I < N")
    return i, n


def pin_device() -> str | None:
    """One GPU per rank (data parallel): this process sees only device LOCAL_RANK of the visible
    ones, so its engine (vLLM, or torch) lands there. Must run before CUDA starts; returns the
    device chosen, None without torchrun or GPUs."""
    local = os.environ.get("LOCAL_RANK")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if local is None:
        return None
    if visible:
        devices = [d for d in visible.split(",") if d.strip()]
    else:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    if len(devices) <= 1:
        return devices[0] if devices else None
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[int(local) % len(devices)]
    return os.environ["CUDA_VISIBLE_DEVICES"]


def run_distributed(cfg, out, *, progress=None, timeout_minutes: int = 600) -> dict | None:
    """This rank's shard, a barrier, then rank 0's merge; returns the summary on rank 0."""
    import torch.distributed as dist

    from .runner import merge_shards, run_eval

    pin_device()
    rank, world = torchrun_rank()
    dist.init_process_group("gloo", timeout=timedelta(minutes=timeout_minutes))
    try:
        run_eval(cfg, out, progress=progress if rank == 0 else None, shard=(rank, world))
        dist.barrier()
        summary = merge_shards(cfg, out, world) if rank == 0 else None
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return summary

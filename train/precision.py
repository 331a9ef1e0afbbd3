"""Where a training run computes: the model on the run's device with float32 master weights and
optimizer state, the forward passes in the run's compute dtype.

One process: ``torch.autocast`` around each step (matmuls and attention in bf16/fp16, reductions
and losses in float32, as autocast's op lists decide), the backward pass outside it. Under
torchrun FSDP2's ``MixedPrecisionPolicy`` gathers the parameters in the compute dtype and reduces
gradients in float32 (``train.distributed.shard``); the same autocast covers the operations
that run outside a sharded block's forward. Checkpoints are written from the float32 weights.

What a step *reads* stays on the host until the step needs it: batches are built on the CPU
from the run's seeded streams (the same data on every device), pinned, and copied without
blocking (:func:`cola_models.devices.to_device`).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn

from cola_models.devices import Placement, to_device


def place(model: nn.Module, placement: Placement) -> tuple[torch.device, torch.dtype]:
    """Move ``model`` to the run's device in float32 (its master weights); return the device
    and the compute dtype."""
    device, compute = placement.torch_device(), placement.torch_dtype()
    model.to(device=device, dtype=torch.float32)
    return device, compute


@contextlib.contextmanager
def autocast(device: torch.device, compute: torch.dtype):
    """Forward passes in ``compute`` (nothing changes for float32)."""
    if compute == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=compute):
        yield


@contextlib.contextmanager
def full_precision(device: torch.device):
    """Leave an enclosing autocast (for the backward pass and the optimizer step)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def batch_to(batch, device: torch.device):
    """A dataclass batch with every tensor field on ``device`` (non-tensor fields kept)."""
    moved = {
        f.name: to_device(v, device)
        for f in dataclasses.fields(batch)
        if isinstance(v := getattr(batch, f.name), torch.Tensor)
    }
    return dataclasses.replace(batch, **moved)


def model_device(model: nn.Module) -> torch.device:
    """The device of a module's parameters (the local one under FSDP)."""
    p = next(model.parameters())
    return p.to_local().device if hasattr(p, "to_local") else p.device

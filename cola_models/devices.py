"""Where a model runs and in what precision: ``--device`` / ``--dtype`` resolved once, the same way
for the CLI, the Python API and the run configs.

- device ``"auto"``: CUDA when ``torch.cuda.is_available()`` (under torchrun, the rank's
  ``LOCAL_RANK`` GPU), else the CPU. ``CUDA_VISIBLE_DEVICES`` works as for any PyTorch program.
- dtype ``"auto"``: bfloat16 on CUDA, float32 on the CPU. float16 is accepted.
- A device that is not there is a :class:`ColaError` (one line at the CLI), never a CUDA trace.

Random streams live on the device that draws from them (:func:`make_generator`): a CPU
``torch.Generator`` cannot drive sampling of CUDA tensors, and a stream is reproducible for a
given device (CUDA and CPU streams of one seed differ, as in PyTorch itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import ColaError

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
DTYPE_CHOICES = "auto | float32 | bfloat16 | float16 (fp32, bf16, fp16)"


def _local_rank() -> int | None:
    rank = os.environ.get("LOCAL_RANK")
    return int(rank) if rank is not None and rank.isdigit() else None


def torch_device(name: str | torch.device = "auto") -> torch.device:
    """``name`` as a device that exists here; "auto" picks CUDA when present (see module doc)."""
    if isinstance(name, torch.device):
        name = str(name)
    name = str(name).strip().lower()
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ColaError(f"unknown device {name!r}; use {DEVICE_CHOICES}") from err
    if device.type not in ("cpu", "cuda", "meta"):  # meta: shapes only (bench/memory_plan.py)
        raise ColaError(f"device {name!r} is not supported; use {DEVICE_CHOICES}")
    if device.type != "cuda":
        return torch.device(device.type)
    if not torch.cuda.is_available():
        raise ColaError(f"--device {name}: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    index = device.index
    if index is None:  # torchrun: each rank its own GPU
        index = (_local_rank() or 0) % count
    if index >= count:
        raise ColaError(f"--device {name}: this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)


def torch_dtype(
    name: str | torch.dtype = "auto", device: torch.device | None = None
) -> torch.dtype:
    """``name`` as a torch dtype; "auto" is bfloat16 on CUDA and float32 elsewhere."""
    if isinstance(name, torch.dtype):
        return name
    key = str(name).strip().lower()
    if key == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    if key not in _DTYPES:
        raise ColaError(f"unknown dtype {name!r}; use {DTYPE_CHOICES}")
    return _DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Placement:
    """A run's device and compute dtype, as the user wrote them ("auto" resolved on use).

    Inference casts the model to ``dtype``. Training keeps float32 master weights and optimizer
    state and computes in ``dtype`` (autocast; FSDP2's mixed-precision policy under torchrun).
    """

    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        # The Python API may hand torch objects; configs and records keep their names.
        if isinstance(self.device, torch.device):
            object.__setattr__(self, "device", str(self.device))
        if isinstance(self.dtype, torch.dtype):
            object.__setattr__(self, "dtype", dtype_name(self.dtype))
        key = str(self.dtype).strip().lower()
        if key != "auto" and key not in _DTYPES:
            raise ColaError(f"unknown dtype {self.dtype!r}; use {DTYPE_CHOICES}")

    def torch_device(self) -> torch.device:
        return torch_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype, self.torch_device())

    def resolved(self) -> Placement:
        """The same placement with "auto" replaced by what it means on this machine."""
        device = self.torch_device()
        return Placement(str(device), dtype_name(torch_dtype(self.dtype, device)))


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded random stream on ``device`` (where the tensors it samples live)."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch onto ``device``: pinned and copied without blocking on CUDA (the copy then
    overlaps the work queued before it); itself on the CPU."""
    if device.type != "cuda" or t.device == device:
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def cpu_threads(requested: int | None = None) -> int:
    """Intra-op threads for CPU work: ``requested``; else ``OMP_NUM_THREADS`` when set (torchrun
    sets it to 1 per rank); else the cores this process may use that other processes are not
    busy on right now (:func:`busy_cores`), at least 1.

    Why not torch's default (every core): on a shared machine, threads that wait for cores
    another process holds spin and stall each other. Measured on a 2-core machine (docs/gpu.md,
    "Threads"; ``bench/threads.py``): a 64-problem beam eval with one core busy elsewhere took
    44.9 s on 2 threads, 31.5 s on 1 (this default: 31.8 s); idle, 24.6 s on 2 and 33.8 s on 1
    (this default: 25.0 s).
    """
    if requested is not None:
        if requested < 1:
            raise ColaError(f"--threads {requested} must be >= 1")
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, round(cores - busy_cores())))


def busy_cores(window: float = 0.1) -> float:
    """Cores other processes keep busy, measured over ``window`` seconds from /proc/stat (this
    process is idle meanwhile). The load average would also count this user's previous command,
    which has ended. 0 where /proc/stat cannot be read."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return sum(ticks) - idle, sum(ticks)

    try:
        busy0, total0 = sample()
        time.sleep(window)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    if total1 <= total0:
        return 0.0
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


def set_cpu_threads(requested: int | None = None) -> int:
    """Apply :func:`cpu_threads` to torch (once per process, before model work); returns it."""
    n = cpu_threads(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n

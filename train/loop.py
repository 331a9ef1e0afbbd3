"""The one training loop every stage uses: AdamW, warmup + cosine schedule, gradient clipping,
metrics.jsonl, atomic checkpoints (weights + optimizer state in safetensors) and resume.

A stage supplies ``step_fn(step, update) -> metrics``; it builds its batch deterministically from
``step`` (so a resumed run sees the same data) and calls ``update(loss_fn)`` once or more (PPO
epochs), where ``loss_fn()`` computes the loss (or ``(loss, extra)``, handed back by ``update``).
The loss is computed inside ``update`` because under torchrun it must run as the forward of the
FSDP root (``train.distributed``); with one process ``update`` simply calls it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cola_models.atomic import write_atomic
from cola_models.checkpoint import (
    atomic_dir,
    full_state,
    load_state,
    read_json,
    shard_like,
    write_state,
    writes_files,
)
from cola_models.errors import ColaError

from . import distributed
from .precision import autocast, full_precision, model_device


@dataclass
class OptimConfig:
    steps: int = 500
    lr: float = 1e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio (reference SFT: cosine_with_min_lr, 0.1)."""
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 100
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of keeping them (every
    ``nn.ModuleList`` element; for the 8B preset): less memory, about one more forward."""

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"steps={self.steps} must be >= 1"),
            (self.lr > 0, f"lr={self.lr} must be > 0"),
            (self.warmup_steps >= 0, f"warmup_steps={self.warmup_steps} must be >= 0"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]"),
            (self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1 and beta2 must be in [0, 1)"),
            (self.grad_clip > 0, f"grad_clip={self.grad_clip} must be > 0"),
            (self.log_every >= 1, f"log_every={self.log_every} must be >= 1"),
            (self.checkpoint_every >= 1, f"checkpoint_every={self.checkpoint_every} must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ColaError(msg)


def lr_factor(step: int, cfg: OptimConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class RunDir:
    """An output directory holding one run: config.json, metrics.jsonl, checkpoint/, model/."""

    def __init__(self, path: str | Path, stage: str, config: dict[str, Any]) -> None:
        """Take the directory for this run: refused (one line, naming the settings that differ)
        when it holds another run, and held by this process alone until ``finish``."""
        from cola_models.atomic import WriterLock
        from eval.rundir import refuse_other_run

        self.path = Path(path)
        self.stage = stage
        self._lock = None
        self.writer = writes_files()  # under torchrun, rank 0 writes and the others follow
        record = {"stage": stage, "config": config}
        cfg_file = self.path / "config.json"

        def take() -> None:
            if not cfg_file.is_file() and self.path.is_dir():
                if any(p.name != WriterLock.HOLDER for p in self.path.iterdir()):
                    raise ColaError(f"output directory {self.path} is not empty and holds no run")
            self._lock = WriterLock(self.path, f"latent-search train {stage}").__enter__()
            try:
                old = read_json(cfg_file) if cfg_file.is_file() else None
                refuse_other_run(self.path, old, record, f"a {old and old.get('stage')} run")
                if old is None:
                    write_atomic(cfg_file, json.dumps(record, indent=2))
            except BaseException:
                self.release()
                raise

        distributed.agree(take)

    def release(self) -> None:
        """Let another process write the directory (also at exit, whatever the exit)."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.__exit__(None, None, None)

    def __del__(self) -> None:
        self.release()

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def done(self) -> bool:
        return (self.path / "done.json").is_file()

    def log(self, row: dict[str, Any]) -> None:
        if not self.writer:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric rows past the checkpoint we resume from (they will be recomputed)."""
        path = self.path / "metrics.jsonl"
        if not self.writer or not path.is_file():
            return
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if json.loads(r).get("step", -1) < after_step]
        write_atomic(path, "".join(r + "\n" for r in kept))

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run done; every rank calls it and leaves once rank 0 has written."""
        if self.writer:
            write_atomic(self.path / "done.json", json.dumps(summary, indent=2))
        distributed.barrier()
        self.release()

    def summary(self) -> dict[str, Any]:
        return read_json(self.path / "done.json")


# ---------------------------------------------------------------- optimizer state <-> safetensors
# One format for every world size: the one-process optimizer state (parameters by index, full
# tensors), so a one-process checkpoint resumes on N ranks and the other way round.
def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(tensors, json part) of the optimizer state; shards are gathered (every rank calls it)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = distributed_full(v).detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def distributed_full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _save_optimizer(state: tuple[dict, dict], directory: Path) -> None:
    from safetensors.torch import save_file

    tensors, meta = state
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "optimizer.json").write_text(json.dumps(meta))


def _load_optimizer(opt: torch.optim.Optimizer, directory: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(directory / "optimizer.safetensors"))
    meta = json.loads((directory / "optimizer.json").read_text())
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        p = params[int(idx)]
        if torch.is_tensor(v) and v.shape == p.shape:  # moments: this rank's shard of them
            v = shard_like(v, p)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ---------------------------------------------------------------- the loop
WEIGHTS = "weights.safetensors"
"""A checkpoint's (and a finished phase's) weights file."""

StepFn = Callable[[int, Callable[[torch.Tensor], float]], dict[str, float]]


def train_loop(
    run: RunDir,
    model: nn.Module,
    params: list[nn.Parameter],
    step_fn: StepFn,
    cfg: OptimConfig,
    *,
    description: str,
    quiet: bool = False,
    compute: torch.dtype = torch.float32,
) -> list[dict[str, Any]]:
    """Run ``cfg.steps`` steps of ``step_fn`` (resuming from ``run.checkpoint`` if present) on
    ``params``; checkpoints hold the whole model's weights. Under torchrun the model is sharded
    first (FSDP2) and stays sharded. ``compute``: the dtype of the steps' forward passes
    (``train.precision``); weights, gradients and optimizer state stay float32, on the device
    the model is on. Returns the metric rows of the whole run."""
    names = _names(model, params)
    device = model_device(model)
    if cfg.activation_checkpointing:
        distributed.checkpoint_blocks(model)
    run_loss = distributed.shard(model, compute)
    # Sharding replaces every parameter by its shard: look the stage's list up again by name.
    current = dict(model.named_parameters())
    params = [current[n] for n in names]
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    start, elapsed = 0, 0.0
    if (run.checkpoint / "trainer.json").is_file():
        trainer = read_json(run.checkpoint / "trainer.json")
        load_state(model, run.checkpoint / "model" / WEIGHTS)
        _load_optimizer(opt, run.checkpoint)
        start, elapsed = int(trainer["step"]), float(trainer["elapsed"])
        # The saved param groups carry initial_lr, so the schedule can restart at ``start``.
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, cfg), last_epoch=start - 1
        )
        run.truncate_metrics(start)
    last = {"grad_norm": 0.0}

    def update(loss_fn: Callable[[], Any]) -> Any:
        with autocast(device, compute):
            out = run_loss(loss_fn)
        loss = out[0] if isinstance(out, tuple) else out
        with full_precision(device):  # backward and the step outside autocast, in float32
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
        last["grad_norm"] = float(distributed_full(norm))  # one host read per step
        return out

    def checkpoint(step: int) -> None:
        weights, optim = full_state(model), _optimizer_state(opt)  # every rank: a gather
        if not writes_files():
            return
        with atomic_dir(run.checkpoint) as tmp:
            (tmp / "model").mkdir()
            write_state(weights, tmp / "model" / WEIGHTS)
            _save_optimizer(optim, tmp)
            (tmp / "trainer.json").write_text(json.dumps({"step": step, "elapsed": elapsed}))

    with _progress(description, cfg.steps, start, quiet or not writes_files()) as bar:
        model.train()
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            with autocast(device, compute):  # the step's sampling and scoring too
                metrics = step_fn(step, update)
            sched.step()
            elapsed += time.perf_counter() - t0
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                metrics = distributed.mean_metrics({**metrics, **last})
                row = {"step": step, "lr": sched.get_last_lr()[0], "time": round(elapsed, 3)}
                row.update(metrics)
                run.log(row)
                bar(
                    ", ".join(f"{k}={v:.3g}" for k, v in list(metrics.items())[:3] if v is not None)
                )
            bar(None)
            if (step + 1) % cfg.checkpoint_every == 0 or step == cfg.steps - 1:
                checkpoint(step + 1)
        model.eval()
    return run.metrics()


def _names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    by_id = {}
    for n, p in model.named_parameters():
        by_id.setdefault(id(p), n)
    missing = [p for p in params if id(p) not in by_id]
    if missing:
        raise ColaError(f"{len(missing)} trainable parameter(s) do not belong to the model")
    return [by_id[id(p)] for p in params]


@contextmanager
def _progress(description: str, total: int, completed: int, quiet: bool):
    """A rich progress bar on stderr (stdout stays for --json); yields ``bar(info)``: info
    updates the shown metrics, None advances one step."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=Console(stderr=True), disable=quiet) as progress:
        task = progress.add_task(description, total=total, completed=completed, info="")

        def bar(info: str | None) -> None:
            if info is None:
                progress.advance(task)
            else:
                progress.update(task, info=info)

        yield bar


def config_dict(*configs: Any) -> dict[str, Any]:
    """A run's identity (``RunDir``): every setting except where it runs, so that a run
    started on one device resumes on another."""
    out: dict[str, Any] = {}
    for c in configs:
        out.update(asdict(c))
    out.pop("placement", None)
    return out

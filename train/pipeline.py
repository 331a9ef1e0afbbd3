"""All stages in order, seeded and resumable, then the bundled models and their held-out accuracy.

base -> stage1 (IDM + WM, BC) -> stage2 (FTA-I) ---> rl (latent) -> q   => tiny-arith
                                                \\--------------------> tiny-arith-bc
base -> token-rl                                                        => tiny-arith-token-rl
base                                                                    => tiny-arith-base
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from cola_models.atomic import write_atomic
from cola_models.devices import Placement
from cola_models.errors import ColaError

from . import distributed
from .base import BaseRun, run_base
from .data import DataConfig
from .loop import OptimConfig
from .q_model import QRun, run_q
from .rl import RLConfig, RLRun, run_rl
from .stage1 import Stage1Run, run_stage1
from .stage2 import Stage2Run, run_stage2
from .verifier import VerifierRun, run_verifier


@dataclass
class EvalSpec:
    arith: int = 500
    countdown: int = 200
    seed: int = 1


@dataclass
class PipelineConfig:
    seed: int = 0
    base: BaseRun = field(default_factory=BaseRun)
    stage1: Stage1Run = field(default_factory=Stage1Run)
    stage2: Stage2Run = field(default_factory=Stage2Run)
    rl: RLRun = field(default_factory=lambda: RLRun(rl=RLConfig(level="latent", top_k=40)))
    token_rl: RLRun = field(
        default_factory=lambda: RLRun(
            rl=RLConfig(level="token"),
            optim=OptimConfig(steps=60, lr=5e-5, warmup_steps=5, checkpoint_every=10, log_every=1),
        )
    )
    q: QRun = field(default_factory=QRun)
    verifier: VerifierRun = field(default_factory=VerifierRun)
    eval: EvalSpec = field(default_factory=EvalSpec)
    placement: Placement = field(default_factory=Placement)
    """Device and compute dtype of every stage and of the report ([placement]; --device /
    --dtype); a stage's own [<stage>.placement] is replaced by it."""


def _short(opt: OptimConfig, steps: int) -> OptimConfig:
    return replace(opt, steps=steps, warmup_steps=1, checkpoint_every=max(1, steps), log_every=1)


def smoke_config() -> PipelineConfig:
    """A few steps per stage on little data: proves the pipeline end to end in about a minute."""
    c = PipelineConfig()
    data = DataConfig(n_train=600, batch_size=8, max_len=128)
    c.base = replace(
        c.base,
        data=data,
        optim=_short(c.base.optim, 3),
        model=replace(
            c.base.model,
            vocab_size=320,
            hidden_size=64,
            num_heads=1,
            num_kv_heads=1,
            num_layers=1,
            ffn=128,
            tokenizer_problems=600,
        ),
    )
    c.stage1 = replace(
        c.stage1,
        data=data,
        idm_optim=_short(c.stage1.idm_optim, 2),
        bc_optim=_short(c.stage1.bc_optim, 2),
        model=replace(c.stage1.model, n_actions=8, head_ffn=64, merge_ffn=64, max_new_tokens=16),
    )
    c.stage2 = replace(
        c.stage2,
        data=data,
        wm_optim=_short(c.stage2.wm_optim, 2),
        bc_optim=_short(c.stage2.bc_optim, 2),
    )
    small_rl = dict(group_size=2, prompts_per_step=2, max_new_tokens=8, eval_problems=4)
    c.rl = replace(c.rl, data=data, optim=_short(c.rl.optim, 2), rl=replace(c.rl.rl, **small_rl))
    c.token_rl = replace(
        c.token_rl,
        data=data,
        optim=_short(c.token_rl.optim, 2),
        rl=replace(c.token_rl.rl, **small_rl),
    )
    c.q = replace(
        c.q,
        data=data,
        optim=_short(c.q.optim, 2),
        q=replace(
            c.q.q,
            n_problems=4,
            samples_per_problem=2,
            max_new_tokens=8,
            batch_size=4,
            batch_problems=2,
            heldout_problems=2,
        ),
    )
    c.verifier = replace(
        c.verifier,
        data=data,
        optim=_short(c.verifier.optim, 2),
        verifier=replace(
            c.verifier.verifier,
            n_problems=4,
            samples_per_problem=2,
            heldout_problems=4,
            max_new_tokens=8,
            batch_problems=2,
        ),
    )
    c.eval = EvalSpec(arith=8, countdown=4)
    return c


PIPELINE_PRESETS = {"tiny": PipelineConfig, "smoke": smoke_config}

BUNDLE = {
    "tiny-arith": ("q", "CoLA after latent RL, with a Q head (the default model)"),
    "tiny-arith-bc": ("stage2", "CoLA after stage 2 (FTA-I), before RL"),
    "tiny-arith-token-rl": ("token-rl", "the base LM after token-level RL"),
    "tiny-arith-base": ("base", "the base LM trained from scratch"),
}


def pipeline_config(preset: str) -> PipelineConfig:
    if preset not in PIPELINE_PRESETS:
        raise ColaError(f"unknown pipeline preset {preset!r}; choose {', '.join(PIPELINE_PRESETS)}")
    return PIPELINE_PRESETS[preset]()


def _seeded(run, seed: int, placement: Placement):
    """A stage's run with the pipeline's seed and placement."""
    return replace(run, data=replace(run.data, seed=seed), placement=placement)


def run_pipeline(cfg: PipelineConfig, out: str | Path, *, quiet: bool = False) -> dict:
    """Run every stage (skipping finished ones), export fp16 models to out/models, evaluate."""
    out = Path(out)
    s = cfg.seed
    dirs = {"base": run_base(_seeded(cfg.base, s, cfg.placement), out / "base", quiet=quiet)}
    stage1 = replace(cfg.stage1, model=replace(cfg.stage1.model, backbone=str(dirs["base"])))
    dirs["stage1"] = run_stage1(_seeded(stage1, s, cfg.placement), out / "stage1", quiet=quiet)
    stage2 = replace(cfg.stage2, model=replace(cfg.stage2.model, model=str(dirs["stage1"])))
    dirs["stage2"] = run_stage2(_seeded(stage2, s, cfg.placement), out / "stage2", quiet=quiet)
    rl = replace(cfg.rl, rl=replace(cfg.rl.rl, model=str(dirs["stage2"]), level="latent"))
    dirs["rl"] = run_rl(_seeded(rl, s, cfg.placement), out / "rl", quiet=quiet)
    q = replace(cfg.q, q=replace(cfg.q.q, model=str(dirs["rl"])))
    dirs["q"] = run_q(_seeded(q, s, cfg.placement), out / "q", quiet=quiet)
    tok = replace(cfg.token_rl, rl=replace(cfg.token_rl.rl, model=str(dirs["base"]), level="token"))
    dirs["token-rl"] = run_rl(_seeded(tok, s, cfg.placement), out / "token-rl", quiet=quiet)
    ver = replace(
        cfg.verifier,
        verifier=replace(cfg.verifier.verifier, policy=str(dirs["q"]), init=str(dirs["base"])),
    )
    dirs["verifier"] = run_verifier(_seeded(ver, s, cfg.placement), out / "verifier", quiet=quiet)

    def export_and_evaluate() -> dict:  # rank 0 only under torchrun; the others wait for it
        models = export(dirs, out / "models")
        report = evaluate_bundle(models, cfg.eval, quiet=quiet, placement=cfg.placement)
        write_atomic(out / "report.json", json.dumps(report, indent=2))
        return report

    return distributed.agree(export_and_evaluate)


def export(dirs: dict[str, Path], target: Path) -> dict[str, Path]:
    """fp16 copies of the final models under their bundled names, each with a one-line card."""
    from cola_models.loading import load_model

    target.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (stage, description) in BUNDLE.items():
        dest = target / name
        model = load_model(dirs[stage], device="cpu", dtype="float32")  # a copy: no GPU needed
        model.save_pretrained(dest, dtype="float16")
        (dest / "README.txt").write_text(description + "\n")
        paths[name] = dest
    if "verifier" in dirs:  # a reward-model directory: copied as it is (fp32, HF format)
        dest = target / "tiny-arith-verifier"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(dirs["verifier"], dest)
    return paths


def evaluate_bundle(
    models: dict[str, Path],
    spec: EvalSpec,
    *,
    quiet: bool = False,
    placement: Placement | None = None,
) -> dict:
    """Greedy held-out accuracy of each exported model on arith and countdown (test split)."""
    from cola_models.loading import load_model
    from eval.evaluate import evaluate_problems
    from eval.tasks import get_task

    problems = {
        "arith": get_task("arith").generate(spec.arith, seed=spec.seed, split="test"),
        "countdown": get_task("countdown").generate(spec.countdown, seed=spec.seed, split="test"),
    }
    report = {}
    placed = (placement or Placement()).resolved()
    for name, path in models.items():
        model = load_model(path, device=placed.device, dtype=placed.dtype)
        report[name] = {task: evaluate_problems(model, ps) for task, ps in problems.items() if ps}
        if not quiet:
            accs = ", ".join(f"{t} {r['accuracy']:.3f}" for t, r in report[name].items())
            print(f"{name}: {accs}")
    return report


def install_bundle(models_dir: Path, bundled_dir: Path) -> None:
    """Copy exported models into the package's bundled/ directory (maintainers only)."""
    for name in BUNDLE:
        src = models_dir / name
        if not src.is_dir():
            raise ColaError(f"{src} is missing; run the pipeline first")
        dest = bundled_dir / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)

"""A short stage-1 run for tests/train/test_distributed.py, under torchrun or alone.

usage: dist_job.py OUT CONFIG [CRASH_AT]: train stage 1 (smoke preset, bundled base) into OUT;
with CRASH_AT, the process dies before the IDM phase's step CRASH_AT (after its checkpoints).
DIST_JOB_DTYPE in the environment sets the compute dtype (--dtype)."""

import os
import sys
from pathlib import Path

import train.loop
from train.cli_entry import run_stage


def crash_before(step_no: int):
    real = train.loop.train_loop

    def loop(run, model, params, step_fn, cfg, **kw):
        def step(step, update):
            if run.stage == "stage1-idm" and step == step_no:
                raise SystemExit(3)
            return step_fn(step, update)

        return real(run, model, params, step, cfg, **kw)

    train.loop.train_loop = loop


if __name__ == "__main__":
    if len(sys.argv) > 3:
        crash_before(int(sys.argv[3]))
    run_stage(
        "stage1",
        preset="smoke",
        config=Path(sys.argv[2]),
        out=Path(sys.argv[1]),
        model="tiny-arith-base",
        quiet=True,
        dtype=os.environ.get("DIST_JOB_DTYPE"),
    )

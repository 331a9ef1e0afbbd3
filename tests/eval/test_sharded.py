"""Evaluation across processes: shards (job arrays) and torchrun ranks write, after the merge,
the records one process writes."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from eval.runner import EvalConfig, merge_shards, run_eval


def _records(path):
    # Seconds are wall time, the one field that differs from run to run.
    return [
        {k: v for k, v in json.loads(x).items() if k != "seconds"}
        for x in path.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    run_eval(EvalConfig(limit=6, batch_size=2), out)
    return out


def test_shards_merge_into_what_one_process_writes(single, tmp_path):
    cfg = EvalConfig(limit=6, batch_size=3)  # other batches: the records must not care
    with pytest.raises(ValueError, match="shard-1-of-2 is missing 3 problem"):
        run_eval(cfg, tmp_path, shard=(0, 2))
        merge_shards(cfg, tmp_path, 2)
    run_eval(cfg, tmp_path, shard=(1, 2))
    summary = merge_shards(cfg, tmp_path, 2)
    assert _records(tmp_path / "results.jsonl") == _records(single / "results.jsonl")
    assert summary["n"] == 6
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
        (single / "config.json").read_text()
    )
    with pytest.raises(ValueError, match="other settings"):
        merge_shards(EvalConfig(limit=6, search=cfg.search.__class__(seed=3)), tmp_path, 2)


def test_sampled_shards_draw_the_one_process_samples(tmp_path):
    from latent_search.search import SearchSpec

    cfg = EvalConfig(limit=6, batch_size=2, search=SearchSpec(algorithm="sample", seed=5))
    run_eval(cfg, tmp_path / "one")
    for i in (1, 0):
        run_eval(cfg, tmp_path / "two", shard=(i, 2))
    merge_shards(cfg, tmp_path / "two", 2)
    one, two = (_records(tmp_path / d / "results.jsonl") for d in ("one", "two"))
    assert one == two
    # and the records are draws, not a deterministic output: another seed gives others
    run_eval(EvalConfig(limit=6, batch_size=2, search=SearchSpec("sample", seed=6)), tmp_path / "o")
    assert _records(tmp_path / "o" / "results.jsonl") != one


@pytest.mark.skipif(
    shutil.which("torchrun") is None
    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="needs torchrun",
)
def test_two_torchrun_ranks_write_what_one_process_writes(single, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc-per-node", "2", "--log-dir", str(tmp_path / "logs"), "-m",
           "latent_search_cli", "eval", "--limit", "6", "--batch-size", "2", "--out",
           str(tmp_path / "run"), "--json"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["n"] == 6  # rank 0 reports once
    assert _records(tmp_path / "run" / "results.jsonl") == _records(single / "results.jsonl")


def test_each_rank_sees_its_own_gpu(monkeypatch):
    from eval.sharded import pin_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pin_device() == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.delenv("LOCAL_RANK")
    assert pin_device() is None and os.environ["CUDA_VISIBLE_DEVICES"] == "5"


@pytest.mark.skipif(
    shutil.which("torchrun") is None
    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="needs torchrun",
)
def test_a_sampled_eval_runs_under_torchrun_with_the_documented_flags(tmp_path):
    """`--num-samples` survives torchrun's parser (`--n` was read as an abbreviation of its
    --nnodes / --nproc-per-node); the ranks write what one process writes."""
    from latent_search.search import SearchSpec

    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "--log-dir", str(tmp_path / "logs"),
           "-m", "latent_search_cli", "eval", "--search", "best-of-n", "--num-samples", "3",
           "--limit", "4", "--batch-size", "2", "--max-new-tokens", "64", "--out",
           str(tmp_path / "run"), "--json"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["n"] == 4
    spec = SearchSpec(algorithm="best-of-n", n=3, max_new_tokens=64, scorer="equations-likelihood")
    run_eval(EvalConfig(limit=4, batch_size=2, search=spec), tmp_path / "one")
    assert _records(tmp_path / "run" / "results.jsonl") == _records(
        tmp_path / "one" / "results.jsonl"
    )


def test_no_option_is_a_prefix_of_a_torchrun_option():
    import typer
    from torch.distributed.run import get_args_parser

    from latent_search_cli.app import app

    theirs = {o for a in get_args_parser()._actions for o in a.option_strings}
    aliases = {"--n"}  # kept for one-process scripts; torchrun users write --num-samples

    def options(command):
        for sub in getattr(command, "commands", {}).values():
            yield from options(sub)
        for p in getattr(command, "params", []):
            yield from (o for o in p.opts + p.secondary_opts if o.startswith("--"))

    ours = set(options(typer.main.get_command(app))) - aliases
    clashes = sorted(o for o in ours for t in theirs if t.startswith(o))
    assert clashes == []

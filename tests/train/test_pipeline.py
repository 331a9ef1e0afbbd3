"""A shortened pipeline end to end, and per stage: finite losses, trained weights moved, frozen
weights bit-identical."""

import itertools
import json

import pytest
import torch

from cola_models.loading import load_model
from train.pipeline import BUNDLE, run_pipeline, smoke_config

_calls = itertools.count()


def _parity_reward(self, problem, text):
    """Alternates between calls, so RL sees non-zero advantages even when an untrained model
    writes the same text for every sample."""
    return float(next(_calls) % 2)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from eval.tasks import ArithTask, CountdownTask

    out = tmp_path_factory.mktemp("pipe")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ArithTask, "reward", _parity_reward)
        mp.setattr(CountdownTask, "reward", _parity_reward)
        report = run_pipeline(smoke_config(), out, quiet=True)
    return out, report


def _sd(path):
    return {k: v.clone() for k, v in load_model(path).state_dict().items()}


def _same(a, b, prefix):
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, prefix
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_pipeline_exports_loadable_models_and_a_report(smoke):
    out, report = smoke
    assert set(report) == set(BUNDLE)
    for name in BUNDLE:
        model = load_model(out / "models" / name)
        assert model.generation_defaults["prompt_template"].startswith("Question:")
        for task in ("arith", "countdown"):
            assert 0.0 <= report[name][task]["accuracy"] <= 1.0
    assert load_model(out / "models" / "tiny-arith").kind == "cola"
    assert load_model(out / "models" / "tiny-arith-base").kind == "lm"
    assert json.loads((out / "report.json").read_text()) == report


def test_every_logged_loss_is_finite(smoke):
    out, _ = smoke
    files = list(out.glob("**/metrics.jsonl"))
    assert len(files) >= 8
    for f in files:
        for row in map(json.loads, f.read_text().splitlines()):
            assert all(torch.isfinite(torch.tensor(v)) for v in row.values()), (f, row)


def test_stage1_trains_heads_with_backbone_frozen(smoke):
    out, _ = smoke
    base, s1 = load_model(out / "base" / "model"), _sd(out / "stage1" / "model")
    base_sd = {f"backbone.{k}": v for k, v in base.backbone.state_dict().items()}
    assert all(torch.equal(base_sd[k], s1[k]) for k in base_sd)
    from train.stage1 import build_cola

    fresh = build_cola(
        smoke_config().stage1.model.__class__(
            **{**smoke_config().stage1.model.__dict__, "backbone": str(out / "base" / "model")}
        ),
        0,
    ).state_dict()
    for prefix in ("idm.", "world.", "policy."):
        assert not _same(fresh, s1, prefix), prefix


def test_stage2_moves_backbone_and_policy_only(smoke):
    out, _ = smoke
    s1, s2 = _sd(out / "stage1" / "model"), _sd(out / "stage2" / "model")
    assert not _same(s1, s2, "backbone.")
    assert not _same(s1, s2, "policy.")
    for prefix in ("idm.", "world.", "q."):
        assert _same(s1, s2, prefix), prefix


def test_latent_rl_changes_only_the_policy(smoke):
    out, _ = smoke
    s2, rl = _sd(out / "stage2" / "model"), _sd(out / "rl" / "model")
    assert not _same(s2, rl, "policy.")
    for prefix in ("backbone.", "idm.", "world.", "q."):
        assert _same(s2, rl, prefix), prefix  # the language model stays bit-identical


def test_token_rl_changes_the_language_model(smoke):
    out, _ = smoke
    base, tok = _sd(out / "base" / "model"), _sd(out / "token-rl" / "model")
    assert not _same(base, tok, "backbone.")


def test_q_stage_changes_only_the_q_head(smoke):
    out, _ = smoke
    rl, q = _sd(out / "rl" / "model"), _sd(out / "q" / "model")
    assert not _same(rl, q, "q.")
    for prefix in ("backbone.", "idm.", "world.", "policy."):
        assert _same(rl, q, prefix), prefix
    samples = (out / "q" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 8 and all(json.loads(s)["reward"] in (0.0, 1.0) for s in samples)
    # The samples carry the task's reward of each sample, in order: the fixture's reward
    # alternates 0, 1, 0, ... from call to call, so stored rewards must alternate too.
    rewards = [json.loads(s)["reward"] for s in samples]
    assert all(a != b for a, b in zip(rewards, rewards[1:])), rewards


def test_rerun_of_a_finished_pipeline_is_a_no_op(smoke):
    out, report = smoke
    before = (out / "rl" / "metrics.jsonl").read_text()
    rerun = run_pipeline(smoke_config(), out, quiet=True)  # real rewards now: only eval differs
    assert set(rerun) == set(report)
    assert (out / "rl" / "metrics.jsonl").read_text() == before


def test_pipeline_is_reproducible_from_its_seed(smoke, tmp_path):
    """Same preset, same seed: bit-identical weights at every stage (the basis of the claim that
    `train pipeline --preset tiny` reproduces the bundled models)."""
    from eval.tasks import ArithTask, CountdownTask

    out, _ = smoke
    global _calls
    saved, _calls = _calls, itertools.count()  # the fixture's reward stream, restarted
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ArithTask, "reward", _parity_reward)
            mp.setattr(CountdownTask, "reward", _parity_reward)
            run_pipeline(smoke_config(), tmp_path / "again", quiet=True)
    finally:
        _calls = saved
    for stage in ("base", "stage1", "stage2", "rl", "q", "token-rl"):
        a, b = _sd(out / stage / "model"), _sd(tmp_path / "again" / stage / "model")
        assert all(torch.equal(a[k], b[k]) for k in a), stage

import pytest
import torch

import cola_models as cm
from cola_models.tokenizer import left_pad


def _batch(model, texts):
    ids = [[1, *t.encode()] for t in texts]  # byte tokenizer: bos=1, byte b -> id b + 3
    ids = [[i if j == 0 else i + 3 for j, i in enumerate(s)] for s in ids]
    return left_pad(ids, 0)


def test_expansion_from_one_backbone_step_matches_separate_full_passes(tiny_cola):
    model = tiny_cola
    input_ids, mask = _batch(model, ["12+7=", "a longer prefix here", "x"])  # left-padded
    B, T = input_ids.shape
    actions = torch.tensor([[0, 3, 5, 15], [1, 1, 2, 9], [7, 8, 11, 4]])  # [B, k]
    shared = model.expand(input_ids, mask, actions)  # [B, k, V]
    for j in range(actions.shape[1]):
        acts = torch.zeros(B, T, dtype=torch.long)
        acts[:, -1] = actions[:, j]
        with torch.no_grad():
            full = model(input_ids, mask, acts, idm=False).token_logits[:, -1]  # [B, V]
        assert (shared[:, j] - full).abs().max().item() < 1e-4


def test_incremental_state_matches_full_recompute(tiny_cola, gen):
    model = tiny_cola
    input_ids, mask = _batch(model, ["3*4=", "hello world, more"])
    state = model.start(input_ids, mask)
    seq, policy_steps, q_steps, h_steps = input_ids, [], [], []
    for _ in range(6):
        policy_steps.append(state.policy_logits)
        q_steps.append(state.q_values)
        h_steps.append(state.h)
        tok = torch.randint(3, 259, (2,), generator=gen)
        seq = torch.cat([seq, tok[:, None]], 1)
        mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        state = model.advance(state, tok)
    with torch.no_grad():
        full = model(seq, mask, idm=False)
    T0 = input_ids.shape[1]
    for i in range(6):
        t = T0 - 1 + i
        assert torch.allclose(policy_steps[i], full.policy_logits[:, t], atol=1e-4)
        assert torch.allclose(q_steps[i], full.q_values[:, t], atol=1e-4)
        assert torch.allclose(h_steps[i], full.h[:, t], atol=1e-4)


def test_state_select_and_cat_keep_rows_independent(tiny_cola):
    model = tiny_cola
    a = model.start(*_batch(model, ["short"]))
    b = model.start(*_batch(model, ["a much longer prompt", "mid length"]))
    both = cm.ColaState.cat([a, b.select([1, 0])])
    tokens = torch.tensor([40, 41, 42])
    stepped = model.advance(both, tokens)
    ref_a = model.advance(a, tokens[:1])
    ref_b = model.advance(b.select([1, 0]), tokens[1:])
    assert torch.allclose(stepped.policy_logits[:1], ref_a.policy_logits, atol=1e-4)
    assert torch.allclose(stepped.policy_logits[1:], ref_b.policy_logits, atol=1e-4)
    assert torch.allclose(stepped.h[1:], ref_b.h, atol=1e-4)


def test_score_uses_idm_actions_and_gives_logprobs(tiny_cola):
    input_ids, mask = _batch(tiny_cola, ["1+2=3", "4+5=9!"])
    s = tiny_cola.score(input_ids, mask)
    T = input_ids.shape[1]
    for key in ("idm_actions", "action_logprobs", "token_logprobs", "backbone_logprobs"):
        assert s[key].shape == (2, T - 1)
    assert (s["action_logprobs"] <= 0).all() and (s["token_logprobs"] <= 0).all()


def test_reference_output_mode_subtracts_h():
    model = cm.build_model("tiny", output_mode="reference")
    h = torch.randn(3, 128)
    a = torch.tensor([0, 1, 2])
    s = model.world.merged(h, model.world.embed(a))
    expected = model.backbone.lm_head(model.backbone.final_norm(s) - h)
    assert torch.allclose(model.world_logits(h, a), expected)


def test_param_counts_of_paper_preset_on_meta():
    counts = cm.build_model("llama-3.1-8b", device="meta").param_counts()
    for key, ref in {"idm": 0.873e9, "merge": 0.587e9, "policy": 1.745e9}.items():
        assert abs(counts[key] - ref) / ref < 0.03, (key, counts[key])
    assert abs(counts["backbone"] - 8.03e9) / 8.03e9 < 0.01
    assert counts["codebook"] == 64 * 4096 and counts["q"] == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(preset="nope"), "unknown preset"),
        (dict(preset="tiny", dtype="float13"), "unknown dtype"),
        (dict(preset="tiny", device="gpu0"), "unknown device"),
        (dict(preset="tiny", n_actions=1), "n_actions=1 must be >= 2"),
        (dict(preset="tiny", output_mode="other"), "output_mode"),
        (dict(preset="smollm2-135m", backbone_path="/does/not/exist"), "is not a directory"),
    ],
)
def test_bad_input_gives_one_line_error(kwargs, match):
    preset = kwargs.pop("preset")
    with pytest.raises(cm.ColaError, match=match) as info:
        cm.build_model(preset, **kwargs)
    assert "\n" not in str(info.value)


def test_a_q_head_that_reads_the_lms_surprise_matches_incrementally_and_reloads(tmp_path, gen):
    """q_features = "h+lm": the incremental Q (one token at a time, its surprise from the state
    before it) equals the teacher-forced Q, it differs from the h-only head's, and it reloads."""
    from dataclasses import replace

    import cola_models as cm
    from cola_models.model import ColaModel

    base = cm.build_model("tiny", seed=0)
    torch.manual_seed(0)
    model = ColaModel(replace(base.config, q_features="h+lm"), base.backbone, base.tokenizer)
    model.eval()
    input_ids, mask = _batch(model, ["3*4=", "hello world, more"])
    state, seq, q_steps = model.start(input_ids, mask), input_ids, []
    for _ in range(5):
        q_steps.append(state.q_values)
        tok = torch.randint(3, 259, (2,), generator=gen)
        seq = torch.cat([seq, tok[:, None]], 1)
        mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        state = model.advance(state, tok)
    with torch.no_grad():
        full = model(seq, mask, idm=False).q_values
        model.q_in.weight.zero_()
        model.q_in.bias.zero_()
        blind = model(seq, mask, idm=False).q_values  # the same head without the surprise
    T0 = input_ids.shape[1]
    for i in range(5):
        assert torch.allclose(q_steps[i], full[:, T0 - 1 + i], atol=1e-4)
    assert not torch.allclose(full, blind, atol=1e-3)
    model.save_pretrained(tmp_path / "m", dtype="float32")
    back = cm.load_model(tmp_path / "m")
    assert back.config.q_features == "h+lm" and torch.equal(back.q_in.bias, model.q_in.bias)

"""The in-place KV cache: appends write one slot, branching never lets one state see another's
tokens, and cached decoding equals recomputing from scratch."""

import pytest
import torch

from cola_models.blocks import StackCache
from cola_models.tokenizer import left_pad


def _one_layer(B=2, S=3, C=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, 1, C or S, 4, generator=g)
    return StackCache([k], [k.clone()], S)


def _append(cache: StackCache, value: float) -> StackCache:
    new = cache.extended(1)
    new.write(0, torch.full((cache.kbuf[0].shape[0], 1, 1, 4), value), torch.zeros(1))
    return new


def test_append_at_the_tip_writes_in_place_and_grows_geometrically():
    c = _one_layer(S=3, C=8)
    d = _append(c, 1.0)
    assert d.kbuf[0].data_ptr() == c.kbuf[0].data_ptr()  # no copy while there is room
    assert d.length == 4 and c.length == 3
    full = _one_layer(S=8, C=8)
    before, old_ptr = full.keys[0].clone(), full.kbuf[0].data_ptr()
    grown = _append(full, 1.0)
    assert grown.capacity >= 10 and grown.kbuf[0].data_ptr() != old_ptr
    assert full.kbuf is grown.kbuf  # swapped in for every state on these buffers
    assert torch.equal(full.keys[0], before) and torch.equal(grown.keys[0][:, :, :8], before)


def test_branching_a_state_twice_copies_and_keeps_both_children_apart():
    parent = _one_layer(S=3, C=8)
    first = _append(parent, 1.0)
    second = _append(parent, 2.0)  # the parent is no longer at the tip: this one copies
    assert second.kbuf[0].data_ptr() != parent.kbuf[0].data_ptr()
    assert (first.keys[0][:, :, 3] == 1.0).all() and (second.keys[0][:, :, 3] == 2.0).all()
    assert parent.length == 3 and torch.equal(first.keys[0][:, :, :3], parent.keys[0])
    third = _append(first, 3.0)  # the first child is still at its tip: in place
    assert third.kbuf[0].data_ptr() == parent.kbuf[0].data_ptr()
    assert (first.keys[0][:, :, 3] == 1.0).all()


def test_cat_right_aligns_shorter_caches_and_select_copies_only_the_prefix():
    a, b = _one_layer(B=1, S=2, C=16, seed=1), _one_layer(B=2, S=5, seed=2)
    both = StackCache.cat([a, b], room=3)
    assert both.length == 5 and both.capacity == 8
    assert torch.equal(both.keys[0][:1, :, 3:], a.keys[0]) and (both.keys[0][:1, :, :3] == 0).all()
    assert torch.equal(both.keys[0][1:], b.keys[0])
    picked = both.select(torch.tensor([2, 2]))
    assert picked.capacity == 5 and torch.equal(picked.keys[0][0], b.keys[0][1])


def test_cached_decoding_of_both_kinds_equals_a_full_recompute(tiny_cola, gen):
    from cola_models import PlainLM

    for model in (tiny_cola, PlainLM(tiny_cola.backbone.lm, tiny_cola.tokenizer)):
        ids, mask = left_pad([[1, 40, 41, 42], [1, 50]], 0)
        state = model.start(ids, mask)
        for step in range(40):  # past the first buffers' capacity: grows in place
            tok = torch.randint(3, 259, (2,), generator=gen)
            child = model.advance(state, tok)
            if step % 7 == 5:  # a sibling branch of the same state must not overwrite the child
                model.advance(state, tok.flip(0))
            state = child
            ids = torch.cat([ids, tok[:, None]], 1)
            mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        with torch.no_grad():
            full = model.start(ids, mask)
        got = state.policy_logits if model.kind == "cola" else state.logits
        want = full.policy_logits if model.kind == "cola" else full.logits
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_reserved_makes_room_once_and_keeps_sharing_states_intact():
    c = _one_layer(S=3, C=4)
    before = c.keys[0].clone()
    r = c.reserved(10)
    assert r.capacity >= 13 and torch.equal(c.keys[0], before)  # the sharing state keeps its prefix
    ptr = r.kbuf[0].data_ptr()
    for i in range(10):
        r = _append(r, float(i))
    assert r.kbuf[0].data_ptr() == ptr  # ten appends, no reallocation


def test_compacted_moves_kept_rows_to_the_front_of_the_same_buffers():
    c = _one_layer(B=4, S=5, C=9, seed=3)
    want = c.keys[0][[1, 3]].clone()
    ptr = c.kbuf[0].data_ptr()
    d = c.compacted([1, 3])
    assert d.kbuf[0].data_ptr() == ptr and d.kbuf[0].shape[0] == 2 and d.length == 5
    assert torch.equal(d.keys[0], want)
    assert torch.equal(_append(d, 7.0).keys[0][:, :, :5], want)  # still appends in place


def test_select_drops_the_padding_every_selected_row_shares(tiny_cola):
    from cola_models import PlainLM

    lm = PlainLM(tiny_cola.backbone.lm, tiny_cola.tokenizer)
    ids, mask = left_pad([[1, 40, 41, 42, 43, 44], [1, 50], [1, 60, 61]], 0)
    state = lm.start(ids, mask)
    short = state.select([1, 2])
    assert short.key_mask.shape[1] == 3 and short.cache.length == 3
    assert short.key_mask.tolist() == [[False, True, True], [True, True, True]]
    tok = torch.tensor([70, 71])
    want = lm.advance(state, torch.tensor([0, 70, 71])).logits[1:]
    torch.testing.assert_close(lm.advance(short, tok).logits, want, atol=1e-5, rtol=1e-5)


def test_row_spans_skip_only_padding_and_cover_every_row():
    from cola_models.attention import row_spans

    lengths = [2, 3, 3, 20, 21, 40]  # ascending, as a generation batch is ordered
    S = 40
    key_mask = torch.tensor([[s >= S - n for s in range(S)] for n in lengths])
    spans = row_spans(key_mask)
    assert [a for a, _, _ in spans] == [0, 3, 5] and spans[-1][1] == len(lengths)
    for a, b, start in spans:
        assert not key_mask[a:b, :start].any()  # only slots no row of the run uses are skipped
    assert row_spans(torch.ones(3, 5, dtype=torch.bool)) == [(0, 3, 0)]


def test_batched_generation_of_very_different_lengths_equals_each_prompt_alone():
    """Prefill by length groups, decode attention by row runs, finished rows compacted in place:
    the batch must still give every prompt what it gets alone (bundled models, which stop at
    different steps on problems of different sizes)."""
    import cola_models as cm
    from cola_models.loading import load_model
    from eval.prompts import format_prompt
    from eval.tasks import get_task

    problems = get_task("arith").generate(8, seed=5, split="test")
    prompts = [format_prompt(p.question) for p in problems]
    prompts[1] = "1+1="  # far shorter than the rest
    cfg = cm.GenerationConfig(max_new_tokens=48, action="greedy")
    for name in ("tiny-arith", "tiny-arith-base"):
        model = load_model(name)
        batch = cm.generate(model, prompts, cfg)
        assert len({len(t) for t in batch.token_ids}) >= 3  # rows left at different steps
        for p, got in zip(prompts, batch.token_ids):
            assert cm.generate(model, [p], cfg).token_ids[0] == got


def test_states_without_values_skip_only_the_q_head(tiny_cola, gen):
    from cola_models.errors import ColaError
    from cola_models.state import ColaState

    assert tiny_cola.q is not None
    ids, mask = left_pad([[1, 40, 41, 42], [1, 50]], 0)
    with_q, without = tiny_cola.start(ids, mask), tiny_cola.start(ids, mask, values=False)
    for _ in range(5):  # a state without Q stays without it, and acts exactly the same
        tok = torch.randint(3, 259, (2,), generator=gen)
        with_q, without = tiny_cola.advance(with_q, tok), tiny_cola.advance(without, tok)
        assert torch.equal(with_q.policy_logits, without.policy_logits)
        assert torch.equal(with_q.h, without.h)
        assert with_q.q_values is not None
        assert without.q_values is None and without.q_cache is None
    with pytest.raises(ColaError, match="Q head"):
        ColaState.cat([with_q, without])


def test_a_generation_prefills_without_q_and_writes_the_same_tokens(tiny_cola, monkeypatch):
    from cola_models.generation import GenerationConfig, generate

    cfg = GenerationConfig(max_new_tokens=12, action="greedy")
    got = generate(tiny_cola, [[1, 40, 41], [1, 50]], cfg)
    calls = []
    start = type(tiny_cola).start

    def spy(self, ids, mask, *, values=True):
        calls.append(values)
        return start(self, ids, mask, values=True)  # the old way: Q computed all along

    monkeypatch.setattr(type(tiny_cola), "start", spy)
    want = generate(tiny_cola, [[1, 40, 41], [1, 50]], cfg)
    assert calls and not any(calls)  # a generation asks for no values
    assert got.token_ids == want.token_ids and got.action_ids == want.action_ids

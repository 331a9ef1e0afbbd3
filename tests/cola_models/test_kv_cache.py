"""The in-place KV cache: appends write one slot, branching never lets one state see another's
tokens, and cached decoding equals recomputing from scratch."""

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

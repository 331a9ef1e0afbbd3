import torch

import cola_models as cm


def test_generation_is_seeded_and_records_actions(tiny_cola):
    cfg = cm.GenerationConfig(max_new_tokens=12, action="sample")
    a = cm.generate(tiny_cola, ["1+1=", "2*3="], cfg, generator=torch.Generator().manual_seed(3))
    b = cm.generate(tiny_cola, ["1+1=", "2*3="], cfg, generator=torch.Generator().manual_seed(3))
    assert a.token_ids == b.token_ids and a.action_ids == b.action_ids
    assert all(
        len(t) == len(x) == len(lp)
        for t, x, lp in zip(a.token_ids, a.action_ids, a.action_logprobs)
    )
    assert all(all(0 <= x < 16 for x in row) for row in a.action_ids)
    assert a.prefill_tokens == 10 and a.decode_tokens == 2 * 11


def test_forced_actions_replay_exactly(tiny_cola, gen):
    cfg = cm.GenerationConfig(max_new_tokens=10, action="sample")
    first = cm.generate(tiny_cola, ["7-2=", "x"], cfg, generator=gen)
    replay = cm.generate(
        tiny_cola,
        ["7-2=", "x"],
        cm.GenerationConfig(max_new_tokens=10, action="greedy"),
        forced_actions=first.action_ids,
    )
    assert replay.token_ids == first.token_ids


def test_greedy_generation_matches_manual_loop(tiny_cola):
    tok = tiny_cola.tokenizer
    out = cm.generate(tiny_cola, ["9+9="], cm.GenerationConfig(max_new_tokens=8, action="greedy"))
    ids = torch.tensor([[tok.bos_token_id, *tok("9+9=", add_special_tokens=False)["input_ids"]]])
    for _ in range(8):
        with torch.no_grad():
            o = tiny_cola(ids, torch.ones_like(ids), idm=False)
            a = o.policy_logits[:, -1].argmax(-1)
            t = tiny_cola.world_logits(o.h[:, -1], a).argmax(-1)
        ids = torch.cat([ids, t[:, None]], 1)
    assert out.token_ids[0] == ids[0, -8:].tolist()


def test_stop_strings_and_batch_shrinking(tiny_cola, gen):
    free = cm.generate(
        tiny_cola, ["ab", "cd"], cm.GenerationConfig(max_new_tokens=20), generator=gen
    )
    text = free.texts[0]
    stop = text[3:5]
    if not stop:
        return
    cfg = cm.GenerationConfig(max_new_tokens=20, stop_strings=(stop,))
    out = cm.generate(tiny_cola, ["ab", "cd"], cfg, generator=torch.Generator().manual_seed(0))
    assert out.finish_reasons[0] == "stop"
    assert stop not in out.texts[0]
    assert out.texts[0] == text[: text.find(stop)]
    assert out.token_ids[1] == free.token_ids[1][: len(out.token_ids[1])]

"""The Q stage's process objective: sibling pairs are read where a right and a wrong sample
part, and a few steps of it move only the Q head, toward the labels."""

import torch

import cola_models as cm
from train.q_model import QConfig, _batch, _labels, q_process_step, sibling_pairs


def _row(p, gen, acts, reward, labels):
    return {"p": p, "prompt": [1, 40, 41], "gen": gen, "acts": acts, "reward": reward,
            "labels": labels}  # fmt: skip


def test_sibling_pairs_part_where_a_right_and_a_wrong_sample_differ():
    rows = [
        _row(0, [5, 6, 7, 2], [1, 2, 3, 4], 1.0, [1.0] * 4),
        _row(0, [5, 6, 9, 2], [1, 2, 8, 4], 0.0, [1.0, 1.0, 0.0, 0.0]),
        _row(0, [5, 6, 7, 2], [1, 2, 3, 4], 1.0, [1.0] * 4),  # a duplicate right sample
        _row(1, [5, 6, 9, 2], [1, 2, 8, 4], 0.0, [0.0] * 4),  # another problem: no pair
    ]
    assert sibling_pairs(rows) == [(0, 2, 3, 8), (2, 2, 3, 8)]


def test_the_process_objective_moves_only_the_q_head_toward_the_labels():
    model = cm.build_model("tiny", seed=0)
    rows = [
        _row(0, [50, 60, 70, 2], [1, 2, 3, 4], 1.0, [1.0] * 4),
        _row(0, [50, 60, 90, 2], [1, 2, 8, 4], 0.0, [1.0, 1.0, 0.0, 0.0]),
    ]
    batch = _batch(rows, model.tokenizer)
    labels, group = _labels(rows, batch.act_mask), torch.tensor([0, 0])
    pairs = sibling_pairs(rows)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.requires_grad_(False)
    model.q.requires_grad_(True)
    opt = torch.optim.Adam(model.q.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss, metrics = q_process_step(model, batch, labels, group, pairs, QConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert metrics["sibling_pairs"] == 1 and losses[-1] < 0.5 * losses[0]
    after = model.state_dict()
    moved = {k.split(".")[0] for k in after if not torch.equal(before[k], after[k])}
    assert moved == {"q"}


def test_monte_carlo_labels_are_the_share_of_rollouts_that_end_right(monkeypatch):
    """Math-Shepherd's labels: every step end is labelled by the share of its rollouts the task
    grades right, and a step's tokens carry the label of its end."""
    from eval.tasks import ArithTask, get_task
    from train.mc_labels import dense_from_steps, mc_labels, step_end_tokens

    assert dense_from_steps([(1, 0.5), (3, 0.25)], 6, 1.0) == [0.5, 0.5, 0.25, 0.25, 1.0, 1.0]
    model = cm.load_model("tiny-arith")
    tok = model.tokenizer
    (problem,) = get_task("arith").generate(1, seed=0, split="train", levels=(2,))
    gen = tok(" 1+1=2. 2+2=4. \\boxed{4}", add_special_tokens=False)["input_ids"]
    ends = step_end_tokens(tok, gen)
    assert [tok.decode(gen[: j + 1]).strip() for j in ends] == ["1+1=2.", "1+1=2. 2+2=4."]
    calls = []

    def graded(self, p, text):  # right iff the rollout is the n-th of its step end, n odd
        calls.append(text)
        return float(len(calls) % 2)

    monkeypatch.setattr(ArithTask, "reward", graded)
    g = torch.Generator().manual_seed(0)
    (labels,) = mc_labels(model, [(problem, [1, 40], gen, 0.0)], 4, 8, g)
    assert len(calls) == 8 and len(labels) == len(gen)
    assert labels[ends[0]] == 0.5 and labels[ends[1]] == 0.5 and labels[-1] == 0.0

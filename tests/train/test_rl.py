"""Latent GRPO with dynamic sampling, rejection-sampling fine-tuning and token RL: what their
updates learn from, and that every arm is reproducible and resumable."""

import copy
from dataclasses import replace

import pytest
import torch

import cola_models as cm
from train.data import DataConfig
from train.loop import OptimConfig
from train.losses import grpo_advantages
from train.rl import RLConfig, RLRun, _LatentActor, rl_update, run_rl
from train.rollouts import Group, SamplingSpec, draw_groups, groups_to_rollouts, sample_groups


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A tiny CoLA model and its backbone as a plain LM, saved as the RL arms' inputs."""
    root = tmp_path_factory.mktemp("rl-models")
    model = cm.build_model("tiny", seed=0)
    model.save_pretrained(root / "cola")
    cm.PlainLM(copy.deepcopy(model.backbone.lm), model.tokenizer).save_pretrained(root / "lm")
    return root


def _group(rewards, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(rewards)
    return Group(
        problem=None,
        prompt=[1, 40, 41],
        gens=[torch.randint(3, 250, (5,), generator=g).tolist() for _ in range(n)],
        acts=[torch.randint(0, 16, (5,), generator=g).tolist() for _ in range(n)],
        rewards=list(rewards),
        answers=[None] * n,
    )


def _grads(model, groups, cfg):
    """The policy's gradient after one update on ``groups`` (the optimiser step is skipped)."""
    actor = _LatentActor(model)
    r = groups_to_rollouts(model.tokenizer, groups)
    grads = {}

    def update(loss_fn):
        model.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        for n, p in model.policy.named_parameters():
            grads[n] = torch.zeros_like(p) if p.grad is None else p.grad.clone()
        return loss

    rl_update(actor, r, cfg, update)
    return grads


@pytest.mark.parametrize("scale", ["group", "none"])
def test_a_tied_group_has_zero_advantage(scale):
    adv = grpo_advantages(torch.tensor([1.0, 1, 1, 1, 0, 1, 0, 1]), 4, scale=scale)
    assert torch.equal(adv[:4], torch.zeros(4)) and adv[4:].abs().sum() > 0


def test_a_tied_group_contributes_no_gradient(tiny_cola):
    cfg = RLConfig(group_size=4, kl_beta=0.0, ppo_epochs=1)
    grads = _grads(copy.deepcopy(tiny_cola), [_group([1, 1, 1, 1])], cfg)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads.values())
    moved = _grads(copy.deepcopy(tiny_cola), [_group([1, 0, 0, 1])], cfg)
    assert any(g.abs().sum() > 0 for g in moved.values())


def test_tied_groups_are_dropped_and_refilled(tiny_cola, monkeypatch):
    import train.rollouts as ro

    calls = iter(range(10_000))

    def fake_sample(model, problems, spec, g):  # every other round ties all its groups
        k = next(calls)
        return [_group([1, 1] if k % 2 == 0 else [0, 1], seed=k) for _ in problems]

    monkeypatch.setattr(ro, "sample_groups", fake_sample)
    cfg = RLConfig(group_size=2, prompts_per_step=3, max_sample_rounds=4)
    draw = draw_groups(
        tiny_cola,
        list(range(50)),
        cfg.sampling,
        3,
        torch.Generator(),
        keep=cfg.keeps,
        max_rounds=cfg.max_sample_rounds,
    )
    assert len(draw.groups) == 3 and not any(gr.tied for gr in draw.groups)
    assert draw.sampled == 6 and draw.tied == 3  # one tied round, one refill round


def test_partial_credit_separates_wrong_samples_by_their_equations(tiny_cola, monkeypatch):
    """With check_weight, a group whose samples are all wrong still carries a gradient: the one
    whose equations hold earns more than the one that misreads the question; the logged reward
    stays the task's, and RFT refuses partial credit."""
    import train.rollouts as ro
    from cola_models.generation import GenerationOutput
    from eval.tasks import get_task

    problem = get_task("arith").generate(1, seed=0, split="train")[0]
    texts = [" 1+1=2. \\boxed{2}", " 1+1=3. \\boxed{3}"]  # both wrong; only the first adds up
    out = GenerationOutput(texts, [[5], [5]], [[0], [0]], [[0.0], [0.0]])
    monkeypatch.setattr(ro, "generate", lambda *a, **k: out)
    plain = RLConfig(group_size=2).sampling
    (tied,) = sample_groups(tiny_cola, [problem], plain, torch.Generator())
    assert tied.rewards == [0.0, 0.0] and tied.tied
    (group,) = sample_groups(
        tiny_cola, [problem], RLConfig(group_size=2, check_weight=0.5).sampling, torch.Generator()
    )
    assert group.rewards == [0.0, 0.0] and not group.tied
    assert group.shaped[0] > group.shaped[1] > 0
    r = groups_to_rollouts(tiny_cola.tokenizer, [group])
    assert torch.equal(r.rewards, torch.tensor(group.shaped))
    with pytest.raises(Exception, match="check_weight"):
        RLConfig(algorithm="rft", check_weight=0.5)


def test_the_loss_takes_log_probs_of_the_distribution_actions_were_sampled_from(tiny_cola):
    """At temperature T the actor's log-probs must be those of softmax(logits / T), the
    distribution the sampler drew from: 500 first actions of one prompt, drawn at T = 0.5,
    match the actor's probabilities at T = 0.5 and not those at T = 1 (the ratio and the KL of
    an off-temperature loss would compare different distributions)."""
    from eval.tasks import get_task

    model = copy.deepcopy(tiny_cola)
    with torch.no_grad():
        model.policy.out.weight.mul_(3)  # a peaked policy, so that the temperature matters
    problem = get_task("arith").generate(1, seed=0, split="train")
    spec = SamplingSpec(group_size=500, max_new_tokens=1, temperature=0.5)
    (group,) = sample_groups(model, problem, spec, torch.Generator().manual_seed(0))
    seen = torch.bincount(torch.tensor([a[0] for a in group.acts]), minlength=model.n_actions)
    seen = seen.float() / seen.sum()
    K = model.n_actions
    every = replace(group, gens=group.gens[:1] * K, acts=[[a] for a in range(K)])
    r = groups_to_rollouts(model.tokenizer, [every])  # row a: action a at the first step

    def probs(temperature):  # the actor's distribution over the K actions at that step
        actor = _LatentActor(model, temperature)
        with torch.no_grad():
            logp, _ = actor.logprobs(actor.prepare(r), r)
        return logp[:, 0].exp()

    tv = lambda p, q: 0.5 * float((p - q).abs().sum())  # noqa: E731
    assert tv(seen, probs(0.5)) < 0.1  # sampling noise at n = 500: about 0.05
    assert tv(seen, probs(1.0)) > 0.25


def test_rft_learns_only_from_correct_samples(tiny_cola):
    cfg = RLConfig(algorithm="rft", group_size=4, ppo_epochs=1)
    right = _group([1, 0, 0, 1])
    other = copy.deepcopy(right)
    for i in (1, 2):  # the wrong samples take other actions: the update must not see them
        other.acts[i] = [(a + 3) % 16 for a in other.acts[i]]
    a = _grads(copy.deepcopy(tiny_cola), [right], cfg)
    b = _grads(copy.deepcopy(tiny_cola), [other], cfg)
    assert all(torch.allclose(a[n], b[n]) for n in a)
    none = _grads(copy.deepcopy(tiny_cola), [_group([0, 0, 0, 0])], cfg)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in none.values())


def test_group_filter_follows_the_algorithm():
    grpo, rft = RLConfig(), RLConfig(algorithm="rft")
    assert not grpo.keeps(_group([1, 1])) and grpo.keeps(_group([0, 1]))
    assert rft.keeps(_group([1, 1])) and not rft.keeps(_group([0, 0]))
    assert RLConfig(filter_groups=False).keeps(_group([0, 0]))


ARMS = {
    "rl": dict(level="latent"),
    "token-rl": dict(level="token"),
    "rft": dict(level="latent", algorithm="rft"),
}


def _arm_run(dirs, arm, steps=3):
    rl = RLConfig(
        model=str(dirs / ("lm" if arm == "token-rl" else "cola")),
        group_size=2,
        prompts_per_step=2,
        max_new_tokens=8,
        eval_problems=4,
        eval_every=2,
        **ARMS[arm],
    )
    optim = OptimConfig(steps=steps, lr=1e-3, warmup_steps=1, checkpoint_every=1, log_every=1)
    return RLRun(rl=rl, data=DataConfig(n_train=200, batch_size=4, max_len=96), optim=optim)


def _weights(path):
    return cm.load_model(path).state_dict()


@pytest.mark.parametrize("arm", list(ARMS))
def test_every_arm_is_reproducible_and_resumes_after_a_kill(dirs, tmp_path, arm, monkeypatch):
    cfg = _arm_run(dirs, arm)
    full = _weights(run_rl(cfg, tmp_path / "a", quiet=True, stage=arm))
    again = _weights(run_rl(cfg, tmp_path / "b", quiet=True, stage=arm))
    assert all(torch.equal(full[k], again[k]) for k in full)

    import train.rl as rl_mod

    real = rl_mod.draw_groups
    seen = iter(range(100))

    def dies_at_third_step(*args, **kw):
        if next(seen) == 2:
            raise KeyboardInterrupt  # a kill between the second and third step
        return real(*args, **kw)

    with monkeypatch.context() as mp:
        mp.setattr(rl_mod, "draw_groups", dies_at_third_step)
        with pytest.raises(KeyboardInterrupt):
            run_rl(cfg, tmp_path / "c", quiet=True, stage=arm)
    resumed = _weights(run_rl(cfg, tmp_path / "c", quiet=True, stage=arm))
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    metrics = [r for r in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3  # the killed step was not logged twice


def test_rl_logs_what_the_field_watches(dirs, tmp_path):
    import json

    run_rl(_arm_run(dirs, "rl"), tmp_path, quiet=True, stage="rl")
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward", "zero_std_frac", "distinct_answers", "samples"):
        assert all(key in r for r in rows), key
    trained = [r for r in rows if r["groups_trained"] > 0]
    assert all({"kl", "entropy", "loss"} <= set(r) for r in trained)
    assert "eval_reward" in rows[0] and "eval_reward" in rows[-1]
    assert replace(RLConfig(), kl_beta=0.0).kl_beta == 0.0

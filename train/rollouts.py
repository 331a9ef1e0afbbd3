"""Sampled groups of the policy on training problems, and the rollout batches RL trains on.

A *group* is G samples of one prompt. RL learns only from the difference between samples of a
group, so a group whose samples all earn the same reward carries no signal; ``draw_groups``
drops such groups and samples more prompts to refill the step (DAPO's dynamic sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cola_models.generation import GenerationConfig, generate
from cola_models.tokenizer import encode, left_pad, pad_id

from .distributed import share
from .seeds import on_device


@dataclass
class Rollouts:
    input_ids: Tensor  # [B, T] prompt + generated, left-padded
    attention_mask: Tensor  # [B, T]
    act_pos: Tensor  # [B, L] index of the state that chose each acting step
    acts: Tensor  # [B, L] latent actions or tokens
    act_mask: Tensor  # [B, L]
    rewards: Tensor  # [B]


@dataclass
class Group:
    """G samples of one problem's prompt."""

    problem: object
    prompt: list[int]
    gens: list[list[int]]
    acts: list[list[int]]
    rewards: list[float]
    """The task's reward of each sample (1 right, 0 wrong)."""
    answers: list[str | None]
    shaped: list[float] | None = None
    """What RL trains on when it adds partial credit to ``rewards`` (SamplingSpec.check_weight)."""

    @property
    def train_rewards(self) -> list[float]:
        return self.rewards if self.shaped is None else self.shaped

    @property
    def tied(self) -> bool:
        """All samples earned the same reward: zero advantage everywhere, no gradient."""
        return max(self.train_rewards) == min(self.train_rewards)

    @property
    def distinct_answers(self) -> int:
        return len({a for a in self.answers if a is not None})


@dataclass(frozen=True)
class SamplingSpec:
    """How the acting policy samples: G per prompt, the length cap, the acting distribution."""

    group_size: int
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    check_weight: float = 0.0
    """Partial credit: this times the gold-free equation check of a sample is added to its
    reward (``latent_search.equations``), so that samples of a group that are all wrong (or all
    right) still differ where one's arithmetic or reading of the question holds and another's
    does not."""


def sample_groups(model, problems: list, spec: SamplingSpec, g: torch.Generator) -> list[Group]:
    """One batched generation of G samples for each problem (actions sampled, tokens greedy for
    CoLA; tokens sampled for a plain LM), with the task's reward of each sample."""
    from eval.answers import extract_answer
    from eval.prompts import format_prompt
    from eval.tasks import get_task
    from latent_search.equations import equation_score

    G, tok = spec.group_size, model.tokenizer
    texts = [format_prompt(p.question) for p in problems]
    gen_cfg = GenerationConfig(
        max_new_tokens=spec.max_new_tokens,
        action="sample",
        action_temperature=spec.temperature,
        action_top_k=spec.top_k,
        token="greedy",
    )
    g = on_device(g, model.device)  # samples drawn where the model is
    out = generate(model, [t for t in texts for _ in range(G)], gen_cfg, generator=g)
    prompts = encode(tok, texts)
    groups = []
    for i, p in enumerate(problems):
        rows = range(i * G, (i + 1) * G)
        rewards = [float(get_task(p.task).reward(p, out.texts[r])) for r in rows]
        shaped = None
        if spec.check_weight:
            checks = [equation_score(p.question, out.texts[r]) for r in rows]
            shaped = [r + spec.check_weight * c for r, c in zip(rewards, checks)]
        groups.append(
            Group(
                problem=p,
                prompt=prompts[i],
                gens=[out.token_ids[r] for r in rows],
                acts=[out.action_ids[r] for r in rows],
                rewards=rewards,
                answers=[extract_answer(out.texts[r]) for r in rows],
                shaped=shaped,
            )
        )
    return groups


@dataclass
class Draw:
    """The groups one RL step trains on, and what sampling them saw."""

    groups: list[Group]
    spare: Group
    """The first group sampled, kept or not (a rank with nothing kept trains on it masked out,
    so that it still takes part in the step's collectives)."""
    sampled: int
    """Groups sampled in all (refills included)."""
    tied: int
    """Sampled groups whose rewards were all equal."""
    distinct_answers: float
    """Mean distinct final answers per sampled group."""
    reward: float
    """Mean reward of every sample drawn."""


def draw_groups(
    model,
    problems: list,
    spec: SamplingSpec,
    n_groups: int,
    g: torch.Generator,
    *,
    keep,
    max_rounds: int = 1,
) -> Draw:
    """Sample rounds of ``n_groups`` random problems until ``n_groups`` groups pass ``keep`` or
    ``max_rounds`` rounds are spent; the first ``n_groups`` kept are returned. Deterministic in
    ``g``, so a resumed run redraws exactly the same groups.

    Under torchrun each rank samples and refills its share of every round's problems (rows r,
    r+N, ... of the round); the problems do not depend on the world size, the samples do (they
    come from ``g`` in batches of another composition)."""
    kept: list[Group] = []
    seen: list[Group] = []
    want = len(share(list(range(n_groups))))  # this rank's share of the step's groups
    if want == 0:
        from cola_models.errors import ColaError

        raise ColaError(f"{n_groups} prompts per step cannot be shared by more ranks")
    for _ in range(max_rounds):
        # host: which problems, the same on every device
        idx = share(torch.randint(len(problems), (n_groups,), generator=g).tolist())
        groups = sample_groups(model, [problems[i] for i in idx], spec, g)
        seen += groups
        kept += [gr for gr in groups if keep(gr)]
        if len(kept) >= want:
            break
    samples = [r for gr in seen for r in gr.rewards]
    return Draw(
        groups=kept[:want],
        spare=seen[0],
        sampled=len(seen),
        tied=sum(gr.tied for gr in seen),
        distinct_answers=sum(gr.distinct_answers for gr in seen) / len(seen),
        reward=sum(samples) / len(samples),
    )


def make_rollouts(
    tokenizer,
    prompts: list[list[int]],
    gens: list[list[int]],
    acts: list[list[int]],
    rewards: Tensor,
) -> Rollouts:
    """Left-padded prompt + generation batch, and where each acting step's state sits."""
    input_ids, mask = left_pad([p + g for p, g in zip(prompts, gens)], pad_id(tokenizer))
    T, L = input_ids.shape[1], max(len(g) for g in gens)
    # host: built here, moved to the model's device with the batch (train.precision.batch_to)
    act_pos = torch.zeros(len(gens), L, dtype=torch.long)  # host: [B, L]
    act_ids = torch.zeros(len(gens), L, dtype=torch.long)  # host: [B, L]
    act_mask = torch.zeros(len(gens), L)  # host: [B, L]
    for i, (a, g) in enumerate(zip(acts, gens)):
        n = len(g)
        # host: the state that chose generated token j
        act_pos[i, :n] = torch.arange(T - n - 1, T - 1)
        act_ids[i, :n] = torch.tensor(a)  # host: filled row by row
        act_mask[i, :n] = 1
    return Rollouts(input_ids, mask, act_pos, act_ids, act_mask, rewards)


def groups_to_rollouts(tokenizer, groups: list[Group]) -> Rollouts:
    """One batch of every sample of ``groups``, group by group (G consecutive rows each)."""
    return make_rollouts(
        tokenizer,
        [gr.prompt for gr in groups for _ in gr.gens],
        [x for gr in groups for x in gr.gens],
        [a for gr in groups for a in gr.acts],
        torch.tensor(
            [r for gr in groups for r in gr.train_rewards], dtype=torch.float
        ),  # host: moved with the batch
    )


def collect(model, problems: list, spec: SamplingSpec, g: torch.Generator) -> Rollouts:
    """G samples of every problem as one rollout batch (no filtering)."""
    return groups_to_rollouts(model.tokenizer, sample_groups(model, problems, spec, g))

"""Pure loss functions of the CoLA stages (shapes in comments, randomness passed in).

Every mean is over the global batch: under torchrun a rank holds a share of the rows, and the
counts that divide are summed over ranks (``train.distributed.denominator``), so the ranks' losses
average to the one-process loss; with one process they are plain means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .distributed import denominator, global_sum


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / denominator(mask.sum())


def global_mean(x: Tensor, mask: Tensor) -> Tensor:
    """The mean of x over mask across all ranks, the same value on every rank (a statistic, not
    a loss share: no gradient flows through the other ranks' part)."""
    mask = mask.to(x.dtype)
    return global_sum((x * mask).sum()) / global_sum(mask.sum()).clamp(min=1)


def token_ce(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean next-token CE. logits [B, T, V], targets [B, T], mask [B, T]."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return masked_mean(ce.view_as(targets), mask)


def gumbel_softmax_st(logits: Tensor, tau: float, u: Tensor) -> tuple[Tensor, Tensor]:
    """Straight-through Gumbel-softmax (reference: tau=2, ``onehot - p.detach() + p``).

    logits [..., K], u uniform noise of the same shape -> (one-hot with soft gradients [..., K],
    soft probabilities p [..., K]). Written out instead of F.gumbel_softmax so the noise is
    passed in (drawn per global batch: see ``train.stage1.gumbel_noise``).
    """
    u = u.to(logits.device).clamp(1e-9, 1 - 1e-9)
    p = ((logits.float() - torch.log(-torch.log(u))) / tau).softmax(-1)
    hard = F.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype)
    return hard - p.detach() + p, p


def neg_entropy(p: Tensor, mask: Tensor) -> Tensor:
    """mean_t sum_a p log p over masked positions; adding it with a positive weight to a loss
    *raises* the entropy of the IDM (the reference's 0.001 bonus). p [B, T, K], mask [B, T]."""
    return masked_mean((p * torch.log(p.clamp(min=1e-9))).sum(-1), mask)


def aggregate(x: Tensor, mask: Tensor, norm: str = "token") -> Tensor:
    """Mean of x [B, L] over masked steps: over all steps of the batch ("token", DAPO), or per
    row first, then over rows with any step ("sequence", the original GRPO)."""
    if norm == "token":
        return masked_mean(x, mask)
    mask = mask.to(x.dtype)
    rows = mask.sum(-1)  # [B]
    per_row = (x * mask).sum(-1) / rows.clamp(min=1)  # [B], 0 for rows without steps
    return per_row.sum() / denominator((rows > 0).sum())


def grpo_advantages(
    rewards: Tensor, group_size: int, *, scale: str = "group", eps: float = 1e-6
) -> Tensor:
    """Group-relative rewards r - mean over each prompt's G samples, divided by the group's std
    when ``scale == "group"`` (GRPO) and not when ``"none"`` (Dr. GRPO). [N*G] -> [N*G]; a group
    whose rewards are all equal gets exactly zero advantage either way."""
    r = rewards.view(-1, group_size)
    adv = r - r.mean(-1, keepdim=True)
    if scale == "group":
        adv = adv / (r.std(-1, keepdim=True) + eps)
    return adv.flatten()


def reference_advantages(
    scores: Tensor, kl: Tensor, mask: Tensor, beta: float, lam: float = 0.95
) -> Tensor:
    """The reference trainer's advantages: per-token reward -beta * (log pi - log pi_ref), the
    (group-normalised, clipped to [-10, 10]) score on the last token, GAE with V = 0, gamma = 1,
    lambda = 0.95, then normalised over the batch. scores [B], kl/mask [B, L] -> [B, L]."""
    rewards = -beta * kl * mask
    last = mask.long().cumsum(-1).argmax(-1)  # index of the last valid step
    rewards[torch.arange(len(scores), device=scores.device), last] += scores.clamp(-10, 10)
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(scores)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + lam * running * mask[:, t]
        adv[:, t] = running
    mean = global_mean(adv, mask)
    std = global_mean((adv - mean) ** 2, mask).sqrt()
    return (adv - mean) / (std + 1e-8) * mask


def ppo_clip_loss(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps: float, norm: str = "token"
) -> Tensor:
    """PPO clipped surrogate over acting steps (see ``aggregate`` for ``norm``). All [B, L]."""
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
    return -aggregate(surrogate, mask, norm)


def kl_k3(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """Non-negative unbiased KL(pi || pi_ref) estimator exp(d) - d - 1, d = ref - logp."""
    d = ref_logp - logp
    return masked_mean(torch.exp(d) - d - 1, mask)


def double_dqn_targets(
    q_next_online: Tensor, q_next_target: Tensor, rewards: Tensor, done: Tensor, gamma: float
) -> Tensor:
    """y = r + gamma * Q_tgt(s', argmax_a Q(s', a)) (0 after terminal). q_next_*: [..., K]."""
    best = q_next_online.argmax(-1, keepdim=True)
    bootstrap = q_next_target.gather(-1, best)[..., 0]
    return rewards + gamma * bootstrap * (~done).to(rewards.dtype)


def pairwise_loss(final: Tensor, right: Tensor, group: Tensor) -> Tensor:
    """Bradley-Terry over right/wrong pairs of the same problem: mean softplus(s_w - s_r).
    final, right, group: [B]. Exactly zero (and no gradient) when no problem has both."""
    same = group[:, None] == group[None, :]
    pairs = same & right[:, None] & ~right[None, :]  # [B, B]: row right, column wrong
    diff = final[:, None] - final[None, :]  # s_r - s_w
    return F.softplus(-diff[pairs]).sum() / denominator(pairs.sum())

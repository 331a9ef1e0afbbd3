import torch

from train.losses import (
    double_dqn_targets,
    grpo_advantages,
    gumbel_softmax_st,
    neg_entropy,
    ppo_clip_loss,
    reference_advantages,
)


def test_gumbel_st_is_one_hot_forward_with_soft_gradients():
    logits = torch.randn(3, 5, requires_grad=True)
    onehot, p = gumbel_softmax_st(
        logits, 2.0, torch.rand(logits.shape, generator=torch.Generator().manual_seed(0))
    )
    assert torch.equal(onehot.detach().sum(-1), torch.ones(3))
    assert set(onehot.detach().unique().tolist()) <= {0.0, 1.0}
    (onehot * torch.arange(5.0)).sum().backward()
    assert logits.grad.abs().sum() > 0
    again, _ = gumbel_softmax_st(
        logits, 2.0, torch.rand(logits.shape, generator=torch.Generator().manual_seed(0))
    )
    assert torch.equal(again, onehot)


def test_entropy_bonus_sign():
    mask = torch.ones(1, 1)
    uniform = torch.full((1, 1, 4), 0.25)
    peaked = torch.tensor([[[0.97, 0.01, 0.01, 0.01]]])
    assert neg_entropy(uniform, mask) < neg_entropy(peaked, mask)  # minimising favours entropy


def test_grpo_advantages_normalise_within_groups():
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), 3)
    assert torch.allclose(adv[:3].sum(), torch.tensor(0.0), atol=1e-5)
    assert adv[0] > 0 > adv[1] and adv[3] == 0


def test_ppo_loss_clips_large_ratios():
    adv, mask = torch.ones(1, 2), torch.ones(1, 2)
    old = torch.zeros(1, 2)
    big = ppo_clip_loss(torch.full((1, 2), 2.0), old, adv, mask, 0.2)
    assert torch.allclose(big, torch.tensor(-1.2))


def test_reference_advantages_decay_backwards_from_the_end():
    mask = torch.ones(2, 4)
    adv = reference_advantages(torch.tensor([1.0, -1.0]), torch.zeros(2, 4), mask, beta=0.0)
    assert adv[0, 3] > adv[0, 0] > 0 > adv[1, 0] > adv[1, 3]


def test_double_dqn_target_uses_online_argmax_and_target_values():
    online = torch.tensor([[0.0, 5.0, 1.0]])
    target = torch.tensor([[9.0, 2.0, 7.0]])
    y = double_dqn_targets(online, target, torch.tensor([0.5]), torch.tensor([False]), 0.9)
    assert torch.allclose(y, torch.tensor([0.5 + 0.9 * 2.0]))
    y_done = double_dqn_targets(online, target, torch.tensor([1.0]), torch.tensor([True]), 0.9)
    assert torch.allclose(y_done, torch.tensor([1.0]))

"""Packed oneDNN linears: same values as F.linear, re-packed when the weight changes, never on a
path that wants gradients, and safe to copy."""

import copy

import pytest
import torch
from torch import nn

from cola_models import packed_linear


@pytest.fixture
def layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 8, bias=False))
    if packed_linear.pack_linears(net) == 0:
        pytest.skip("oneDNN packed linears are not available in this torch build")
    return net


def _reference(net, x):
    return torch.nn.functional.linear(
        torch.relu(torch.nn.functional.linear(x, net[0].weight, net[0].bias)), net[2].weight
    )


def test_packed_values_match_f_linear_and_follow_weight_updates(layer):
    x = torch.randn(5, 3, 24)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _reference(layer, x))
        assert layer[0] in packed_linear._PACKED  # the no-grad path ran packed
        layer[0].weight.add_(1.0)  # an optimizer step: in place
        torch.testing.assert_close(layer(x), _reference(layer, x))


def test_gradients_flow_through_the_plain_path(layer):
    x = torch.randn(4, 24)
    layer(x).sum().backward()
    assert layer[0].weight.grad is not None and layer[0].weight.grad.abs().sum() > 0


def test_a_copied_model_repacks_its_own_weights(layer):
    x = torch.randn(2, 24)
    with torch.no_grad():
        layer(x)
        twin = copy.deepcopy(layer)
        twin[2].weight.mul_(-1)
        torch.testing.assert_close(twin(x), -layer(x))

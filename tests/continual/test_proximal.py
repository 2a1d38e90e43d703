"""FedProx's proximal term (:mod:`edgecl.continual.proximal`) on hand-made parameters."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from edgecl.continual.proximal import ProximalHook


def test_term_is_hand_computed_and_pulls_back_to_the_start():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    frozen = nn.Linear(2, 1)
    frozen.weight.requires_grad_(False)
    frozen.bias.requires_grad_(False)
    tuner = SimpleNamespace(model=nn.ModuleList([model, frozen]))
    hook = ProximalHook(mu=0.1)
    hook.on_round_start(tuner)
    batch = {"img": torch.zeros(4, 3, 8, 8)}
    assert hook.on_batch_loss(batch, None, {}).item() == 0.0  # at the start: nothing to pull
    with torch.no_grad():
        model.weight.add_(torch.tensor([[0.5, -1.0]]))  # moved by (0.5, -1): squared norm 1.25
    loss = hook.on_batch_loss(batch, None, {})
    assert loss.item() == pytest.approx(4 * 0.5 * 0.1 * 1.25)  # batch x mu/2 x ||w - w0||^2
    assert hook.last_terms == {"proximal": pytest.approx(0.25)}
    loss.backward()  # gradient batch x mu x (w - w0) = 4 x 0.1 x (0.5, -1)
    assert torch.allclose(model.weight.grad, torch.tensor([[0.2, -0.4]]))
    assert len(hook.anchor) == 1  # the frozen layer is not anchored
    hook.on_round_end(None)
    assert hook.anchor == []


def test_zero_mu_adds_nothing_and_negative_mu_is_refused():
    hook = ProximalHook(mu=0.0)
    hook.on_round_start(SimpleNamespace(model=nn.Linear(2, 1)))
    assert hook.on_batch_loss({"img": torch.zeros(1, 3, 8, 8)}, None, {}) is None
    with pytest.raises(ValueError):
        ProximalHook(mu=-1.0)
    with pytest.raises(ValueError):
        ProximalHook(mu=float("nan"))

"""The private torch APIs of dino_rnn.fast.torch_private, pinned against the public API they shortcut.

Run these first after a torch upgrade (see the module's docstring for what to re-read in
torch's source). Each shortcut must give the public call's numbers bit for bit, and decline
(``None``) wherever it is not the public call's own path.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dino_rnn.fast.torch_private import FusedAdam, optimizer_has_hooks

V, H = 27, 16


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(V, H), nn.Tanh(), nn.Linear(H, V))


def _grads(model, k: int):
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01 * (k + 1)) + p.detach() * (-1) ** k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lr,weight_decay", [(4e-4, 0.01), (1e-2, 0.0)])
def test_fused_adamw_step_is_adamw_step(dtype, lr, weight_decay):
    """Parameters and the optimizer's state (step, both moments) bit-identical to AdamW(fused=True).step()."""
    a = _model().to(dtype)
    b = copy.deepcopy(a)
    oa = torch.optim.AdamW(a.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    ob = torch.optim.AdamW(b.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    fast = FusedAdam.make(oa)
    assert fast is not None
    for k in range(6):
        _grads(a, k)
        _grads(b, k)
        if k % 2:
            fast.step()
        else:  # the gradients passed in, as the written-out step does
            fast.step([p.grad.clone() for p in a.parameters()])
        ob.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for k in sb["state"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][k][key], sb["state"][k][key]), (k, key)
    # the optimizer still works on its own afterwards (its state stays valid)
    _grads(a, 7)
    _grads(b, 7)
    oa.step()
    ob.step()
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


def test_fused_adamw_continues_a_started_optimizer():
    """Made after some public steps, it takes over the optimizer's existing state."""
    a = _model()
    b = copy.deepcopy(a)
    oa = torch.optim.AdamW(a.parameters(), lr=1e-3, fused=True)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-3, fused=True)
    for k in range(3):
        _grads(a, k)
        _grads(b, k)
        oa.step()
        ob.step()
    fast = FusedAdam.make(oa)
    for k in range(3, 6):
        _grads(a, k)
        _grads(b, k)
        fast.step()
        ob.step()
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


def test_fused_adamw_declines_what_is_not_the_fused_path():
    m = _model()
    assert FusedAdam.make(torch.optim.SGD(m.parameters(), lr=0.1)) is None
    assert FusedAdam.make(torch.optim.Adam(m.parameters(), lr=0.1)) is None  # for-each, not fused
    assert FusedAdam.make(torch.optim.RAdam(m.parameters(), lr=0.1)) is None
    assert FusedAdam.make(torch.optim.AdamW(m.parameters(), lr=0.1, foreach=True)) is None
    assert FusedAdam.make(torch.optim.AdamW(m.parameters(), lr=0.1, fused=True, amsgrad=True)) is None
    assert FusedAdam.make(torch.optim.AdamW(m.parameters(), lr=0.1, fused=True, maximize=True)) is None
    assert FusedAdam.make(torch.optim.AdamW(m.parameters(), lr=torch.tensor(0.1), fused=True)) is None
    groups = [{"params": list(m[0].parameters())}, {"params": list(m[2].parameters()), "lr": 0.5}]
    assert FusedAdam.make(torch.optim.AdamW(groups, lr=0.1, fused=True)) is None
    assert FusedAdam.make(torch.optim.AdamW(m.parameters(), lr=0.1, fused=True)) is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_fused_adam_step_is_adam_step(dtype, weight_decay):
    """For Adam (L2 weight decay, not decoupled) it is Adam(fused=True).step() bit for bit, and
    matches Adam's default for-each path to float rounding."""
    a = _model().to(dtype)
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    oa = torch.optim.Adam(a.parameters(), lr=3e-3, weight_decay=weight_decay, fused=True)
    ob = torch.optim.Adam(b.parameters(), lr=3e-3, weight_decay=weight_decay, fused=True)
    oc = torch.optim.Adam(c.parameters(), lr=3e-3, weight_decay=weight_decay)  # the default path
    fast = FusedAdam.make(oa)
    assert fast is not None
    for k in range(6):
        for m in (a, b, c):
            _grads(m, k)
        fast.step()
        ob.step()
        oc.step()
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        torch.testing.assert_close(pa, pc, rtol=tol, atol=tol)
    for k in ob.state_dict()["state"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(oa.state_dict()["state"][k][key], ob.state_dict()["state"][k][key]), (k, key)


@pytest.mark.parametrize("where", ["optimizer pre", "optimizer post", "global pre", "global post"])
def test_hooks_are_seen_where_the_public_api_registers_them(where):
    """A hook registered through the public API makes the shortcut decline (it would skip the hook)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=0.1, fused=True)
    assert not optimizer_has_hooks(opt)
    calls = []
    hook = lambda *args: calls.append(1)  # noqa: E731
    register = {
        "optimizer pre": opt.register_step_pre_hook,
        "optimizer post": opt.register_step_post_hook,
        "global pre": register_optimizer_step_pre_hook,
        "global post": register_optimizer_step_post_hook,
    }[where]
    handle = register(hook)
    try:
        assert optimizer_has_hooks(opt)
        assert FusedAdam.make(opt) is None
        _grads(m, 0)
        opt.step()
        assert calls == [1]  # the public step runs the hook
    finally:
        handle.remove()
    assert not optimizer_has_hooks(opt)
    assert FusedAdam.make(opt) is not None

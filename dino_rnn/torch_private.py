"""Every private PyTorch API the package uses, in one module, each pinned by a test.

Two shortcuts still pay (``dino-rnn bench`` shows what they save):

- :class:`FusedAdamW` calls the kernel ``torch.optim.AdamW(fused=True).step()`` calls,
  ``torch._fused_adamw_``, without the optimizer's Python around it (per step, that Python
  costs more than the kernel). It reads the optimizer's hook dictionaries to decline when a
  hook is registered.
- :func:`recurrent_forward` calls the ATen op ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``'s
  ``forward`` calls (``torch._VF.rnn_tanh`` / ``lstm`` / ``gru`` on the module's
  ``_flat_weights``), without the module's Python wrapper.

Both compute exactly what the public call computes, bit for bit;
``tests/test_torch_private.py`` checks each against the public API, and every caller has
the public path as its fallback (``make`` returns ``None``).

**On a torch upgrade** (the pin in ``pyproject.toml``), run ``tests/test_torch_private.py``
first, and re-read in torch's source what each shortcut copies:

1. ``torch/optim/adamw.py`` and ``adam.py`` (``_fused_adam``): a fused group still calls
   ``torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
   state_steps, amsgrad=, lr=, beta1=, beta2=, weight_decay=, eps=, maximize=,
   grad_scale=, found_inf=)`` after adding 1 to every ``state["step"]`` (a float32 scalar
   tensor), and lazily creates the state as :meth:`FusedAdamW._init_state` does;
2. ``torch/optim/optimizer.py``: per-optimizer hooks still live in
   ``_optimizer_step_pre_hooks`` / ``_optimizer_step_post_hooks`` and global ones in the
   module's ``_global_optimizer_pre_hooks`` / ``_global_optimizer_post_hooks``;
3. ``torch/nn/modules/rnn.py``: for an unbatched 2-D input and no initial state,
   ``RNN`` / ``LSTM`` / ``GRU.forward`` still call ``_VF.rnn_tanh`` / ``_VF.lstm`` /
   ``_VF.gru`` with ``(input.unsqueeze(1), hx, self._flat_weights, self.bias,
   self.num_layers, self.dropout, self.training, self.bidirectional, self.batch_first)``
   and zero initial states of shape ``(layers, 1, H)``, and ``_flat_weights`` still lists
   the parameter tensors themselves in the order ``weight_ih, weight_hh, bias_ih, bias_hh``.

If a test fails after an upgrade, fix the shortcut from the new source, or delete it and
let its callers take the public path (slower, same numbers).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import optimizer as _optimizer_module


# ---------------------------------------------------------------------------
# AdamW's fused kernel
# ---------------------------------------------------------------------------


def optimizer_has_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """True when a step hook is registered on ``optimizer`` or on every optimizer."""
    return bool(
        getattr(optimizer, "_optimizer_step_pre_hooks", None)
        or getattr(optimizer, "_optimizer_step_post_hooks", None)
        or getattr(_optimizer_module, "_global_optimizer_pre_hooks", None)
        or getattr(_optimizer_module, "_global_optimizer_post_hooks", None)
    )


class FusedAdamW:
    """``optimizer.step()`` of a plain fused ``torch.optim.AdamW``, minus its Python overhead.

    Calls ``torch._fused_adamw_`` with the optimizer's own state tensors and
    hyper-parameters, exactly as ``AdamW.step`` does for one float group on one device,
    so the update is bit-for-bit the same and the optimizer's ``state_dict`` stays valid.
    :meth:`make` returns ``None`` (use ``optimizer.step()``) for anything else: other
    optimizers, several groups, amsgrad, maximize, capturable, hooks, tensor
    hyper-parameters, mixed devices or dtypes.
    """

    def __init__(self, optimizer, params, group):
        self.params = params
        for p in params:
            self._init_state(optimizer.state[p], p)
        self.exp_avgs = [optimizer.state[p]["exp_avg"] for p in params]
        self.exp_avg_sqs = [optimizer.state[p]["exp_avg_sq"] for p in params]
        # The step counts become views of one vector, so one add_ advances them all
        # (``_foreach_add_`` over separate scalars costs more than the AdamW kernel).
        self.step_buf = torch.stack([optimizer.state[p]["step"].detach() for p in params])
        for k, p in enumerate(params):
            optimizer.state[p]["step"] = self.step_buf[k]
        self.steps = [optimizer.state[p]["step"] for p in params]
        beta1, beta2 = group["betas"]
        self.kw = dict(
            amsgrad=False, lr=group["lr"], beta1=float(beta1), beta2=float(beta2),
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
            grad_scale=None, found_inf=None,
        )

    @staticmethod
    def _init_state(state: dict, p: torch.Tensor) -> None:
        """AdamW's lazy state, as ``AdamW._init_group`` makes it for a fused group."""
        if len(state) == 0:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @classmethod
    def make(cls, optimizer) -> "FusedAdamW | None":
        if type(optimizer) is not torch.optim.AdamW or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        params = [p for p in group["params"] if p.requires_grad]
        if (
            not group.get("fused")
            or group.get("amsgrad") or group.get("maximize") or group.get("capturable")
            or group.get("differentiable") or not group.get("decoupled_weight_decay", True)
            or any(torch.is_tensor(group[k]) for k in ("lr", "weight_decay", "eps"))
            or any(torch.is_tensor(b) for b in group["betas"])
            or optimizer_has_hooks(optimizer)
            or len({(p.device, p.dtype) for p in params}) != 1
            or any(p.dtype not in (torch.float32, torch.float64) for p in params)
            or len(params) != len(group["params"])
        ):
            return None
        return cls(optimizer, params, group)

    def step(self, grads: list[torch.Tensor] | None = None) -> None:
        """One AdamW update with ``grads`` (default: every parameter's ``.grad``)."""
        self.step_buf.add_(1)
        torch._fused_adamw_(
            self.params, [p.grad for p in self.params] if grads is None else grads,
            self.exp_avgs, self.exp_avg_sqs, [], self.steps, **self.kw,
        )


# ---------------------------------------------------------------------------
# The recurrent modules' ATen op
# ---------------------------------------------------------------------------

_OPS = {nn.RNN: "rnn_tanh", nn.LSTM: "lstm", nn.GRU: "gru"}


def recurrent_forward(rnn: nn.Module):
    """``f(x) -> out``: what ``rnn(x)[0]`` computes for a 2-D (unbatched) ``x`` and no state.

    ``None`` where the shortcut is not the module's own path: another class, a tanh-less
    ``nn.RNN``, a projection, several layers, bidirectional, batch-first, or weights that
    are not the module's parameters. ``out`` is ``(T, 1, H)``: the batch of one the
    module squeezes away.
    """
    kind = _OPS.get(type(rnn))
    if (
        kind is None
        or (kind == "rnn_tanh" and rnn.nonlinearity != "tanh")
        or getattr(rnn, "proj_size", 0)
        or rnn.num_layers != 1
        or rnn.bidirectional
        or rnn.batch_first
        or not rnn.bias
    ):
        return None
    flat = rnn._flat_weights
    if len(flat) != 4 or any(a is not b for a, b in zip(flat, rnn.parameters())):
        return None
    op = getattr(torch._VF, kind)
    p = next(rnn.parameters())
    zeros = torch.zeros(1, 1, rnn.hidden_size, dtype=p.dtype, device=p.device)
    hx = (zeros, zeros.clone()) if kind == "lstm" else zeros
    dropout, bidirectional, batch_first = rnn.dropout, False, False

    def forward(x: torch.Tensor) -> torch.Tensor:
        return op(x.unsqueeze(1), hx, flat, True, 1, dropout, rnn.training, bidirectional, batch_first)[0]

    return forward


__all__ = ["FusedAdamW", "optimizer_has_hooks", "recurrent_forward"]

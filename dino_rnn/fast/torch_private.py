"""Every private PyTorch API the package uses, in one module, each pinned by a test.

One shortcut still pays (``dino-rnn bench``'s "where a step's time goes" shows the
optimizer's share): :class:`FusedAdam` calls the kernel ``torch.optim.AdamW(fused=True).step()``
calls, ``torch._fused_adamw_`` (or, for ``torch.optim.Adam(fused=True)``, ``torch._fused_adam_``),
without the optimizer's Python around it (per step, that Python costs more than the kernel:
for the aⁿbⁿ twin's ~10k parameters, ``Adam.step()`` with its default for-each path took
~150 µs a step and the fused call ~15 µs). It reads the optimizer's hook dictionaries to decline
when a hook is registered. (The recurrent modules' ATen ops, ``torch._VF.lstm`` and co.,
were called directly before the gradients were compiled; the forward pass now runs in
:mod:`dino_rnn.fast.kernels`, and the NumPy reference path calls the modules themselves.)

It computes exactly what the public call computes, bit for bit;
``tests/test_torch_private.py`` checks it against the public API, and every caller has the
public path as its fallback (``make`` returns ``None``).

**On a torch upgrade** (the pin in ``pyproject.toml``), run ``tests/test_torch_private.py``
first, and re-read in torch's source what the shortcut copies:

1. ``torch/optim/adamw.py`` and ``adam.py`` (``_fused_adam``): a fused group still calls
   ``torch._fused_adamw_`` when its ``decoupled_weight_decay`` is true (AdamW) and
   ``torch._fused_adam_`` when not (Adam), both as ``(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
   state_steps, amsgrad=, lr=, beta1=, beta2=, weight_decay=, eps=, maximize=,
   grad_scale=, found_inf=)`` after adding 1 to every ``state["step"]`` (a float32 scalar
   tensor), and lazily creates the state as :meth:`FusedAdam._init_state` does;
2. ``torch/optim/optimizer.py``: per-optimizer hooks still live in
   ``_optimizer_step_pre_hooks`` / ``_optimizer_step_post_hooks`` and global ones in the
   module's ``_global_optimizer_pre_hooks`` / ``_global_optimizer_post_hooks``.

If a test fails after an upgrade, fix the shortcut from the new source, or delete it and
let its callers take the public path (``optimizer.step()``: slower, same numbers).
"""

from __future__ import annotations

import torch
from torch.optim import optimizer as _optimizer_module


# ---------------------------------------------------------------------------
# Adam's and AdamW's fused kernels
# ---------------------------------------------------------------------------


def optimizer_has_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """True when a step hook is registered on ``optimizer`` or on every optimizer."""
    return bool(
        getattr(optimizer, "_optimizer_step_pre_hooks", None)
        or getattr(optimizer, "_optimizer_step_post_hooks", None)
        or getattr(_optimizer_module, "_global_optimizer_pre_hooks", None)
        or getattr(_optimizer_module, "_global_optimizer_post_hooks", None)
    )


class FusedAdam:
    """``optimizer.step()`` of a plain fused ``torch.optim.Adam`` or ``AdamW``, minus its Python overhead.

    Calls ``torch._fused_adamw_`` (decoupled weight decay: AdamW) or ``torch._fused_adam_``
    (Adam) with the optimizer's own state tensors and hyper-parameters, exactly as
    ``Adam.step`` / ``AdamW.step`` do for one float group on one device,
    so the update is bit-for-bit the same and the optimizer's ``state_dict`` stays valid.
    :meth:`make` returns ``None`` (use ``optimizer.step()``) for anything else: other
    optimizers, several groups, amsgrad, maximize, capturable, hooks, tensor
    hyper-parameters, mixed devices or dtypes.
    """

    def __init__(self, optimizer, params, group):
        self.params = params
        self._kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
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
        """Adam's lazy state, as ``Adam._init_group`` makes it for a fused group."""
        if len(state) == 0:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @classmethod
    def make(cls, optimizer) -> "FusedAdam | None":
        if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        params = [p for p in group["params"] if p.requires_grad]
        if (
            not group.get("fused")
            or group.get("amsgrad") or group.get("maximize") or group.get("capturable")
            or group.get("differentiable") or not isinstance(group.get("decoupled_weight_decay"), bool)
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
        """One Adam / AdamW update with ``grads`` (default: every parameter's ``.grad``)."""
        self.step_buf.add_(1)
        self._kernel(
            self.params, [p.grad for p in self.params] if grads is None else grads,
            self.exp_avgs, self.exp_avg_sqs, [], self.steps, **self.kw,
        )


# ---------------------------------------------------------------------------
# How nn.Dropout draws its mask on the CPU
# ---------------------------------------------------------------------------


def dropout_noise(draw: torch.Tensor, p: float):
    """Draw into the float32 tensor ``draw`` the mask ``nn.Dropout(p)`` draws on the CPU in
    training mode, and return it scaled, as a NumPy array: the multipliers of the logits.

    Not a public contract: ``torch.nn.functional.dropout`` on the CPU draws ``bernoulli_(1 - p)``
    on a float32 tensor shaped like its input, then divides by ``1 - p``; the 0/1 draw times
    torch's float32 ``1 / (1 - p)`` gives the same numbers as its ``div_``. Drawing the same way,
    from the same generator, makes a seeded written-out run draw the masks the autograd run
    draws (``tests/test_speed_semantics.py`` checks it, so an upgrade that changes it fails there).
    """
    import numpy as np

    keep = 1.0 - p
    draw.bernoulli_(keep)
    return np.multiply(draw.numpy(), _inverse_keep(keep))


_INVERSE_KEEP: dict = {}


def _inverse_keep(keep: float):
    """``1 / keep`` as torch's float32 ``div_`` by the Python number ``keep`` gives it."""
    import numpy as np

    c = _INVERSE_KEEP.get(keep)
    if c is None:
        c = _INVERSE_KEEP[keep] = np.float32(torch.ones((), dtype=torch.float32).div_(keep).item())
    return c


__all__ = ["FusedAdam", "optimizer_has_hooks", "dropout_noise", "preload_optimizer_imports"]


def preload_optimizer_imports() -> None:
    """Import now what torch imports the first time an optimizer is made: ``torch._dynamo``.

    Not a public contract: ``torch.optim``'s methods are wrapped by ``torch._disable_dynamo``,
    which imports ``torch._dynamo`` on their first call (about 1 s of CPU here). The study runs
    this in each worker's first kernel while the worker gets ready, so that no notebook's
    training pays it; were it no longer so after an upgrade, the import is only paid later.
    """
    import importlib

    importlib.import_module("torch._dynamo")

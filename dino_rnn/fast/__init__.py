"""The compiled speed path: drop-in steps that compute the same gradient as :mod:`dino_rnn.train`'s.

One interface::

    step = compiled_step(model, optimizer, clip=None)   # None where no compiled step applies
    step.warm_up(x, y)                                  # compiles its kernels (changes nothing)

and the step then does what :class:`dino_rnn.train.Step` (a PyTorch model) or
:class:`dino_rnn.train.NumpyStep` (a NumPy net) does: ``step(x, y)``, ``train()``,
``evaluate(pairs)``, ``snapshot()``, ``restore(state)``. :func:`dino_rnn.train.make_step`
is its only caller; ``AUTOGRAD = True`` in a notebook trains without it.

Inside: :mod:`~dino_rnn.fast.fastgrad` writes out backpropagation through time for the
one-layer cells (readable NumPy, checked against autograd), :mod:`~dino_rnn.fast.kernels`
compiles it with numba (forward and backward in one call per name), :mod:`~dino_rnn.fast.steps`
wraps the kernels as steps, and :mod:`~dino_rnn.fast.torch_private` is the one place that
relies on PyTorch internals (AdamW's fused kernel without the optimizer's Python around it).
The contract is the equivalence tests: ``tests/test_speed_semantics.py`` (every model against
autograd), ``tests/test_kernels.py`` (each kernel against the NumPy code it replaces).

Importing this package loads nothing heavy; numba loads with the first :func:`compiled_step`.
"""

from __future__ import annotations

def unsupported(model, optimizer=None) -> str | None:
    """Why no compiled step applies to ``model`` and its optimizer (``None``: one does)."""
    from dino_rnn.numpy_nets import NumpyLSTM, NumpyNet, NumpyRNN

    if isinstance(model, NumpyNet):
        if type(model) not in (NumpyRNN, NumpyLSTM):
            return f"no compiled kernels for {type(model).__name__}"
        own = model.maths.own() + (optimizer.maths.own() if hasattr(optimizer, "maths") else [])
        return f"it runs your own {', '.join(own)}; the kernels compute the package's" if own else None
    from dino_rnn.fast import fastgrad

    return fastgrad.unsupported(model)


def compiled_step(model, optimizer, clip: float | None = None):
    """The compiled drop-in step for ``model`` (a PyTorch model or a NumPy net), or ``None``
    where none applies (:func:`unsupported` says why)."""
    if unsupported(model, optimizer) is not None:
        return None
    from dino_rnn.fast import steps

    return steps.compiled(model, optimizer, clip)

"""Warm Jupyter kernels: a worker runs one notebook after another in the same kernel, reset between.

A fresh kernel per notebook costs about 5 s of CPU before the notebook's own work starts:
the kernel process, then importing torch (its optimizers pull in ``torch._dynamo``), pandas,
matplotlib and the package, and loading the compiled training kernels. A study runs every
notebook for every seed, so on a 2-core laptop that fixed cost was a third of the five-seed
study. Here a process keeps its kernels and hands each notebook one that is *reset* first:

- the user namespace emptied (IPython's ``%reset -f``: every name a notebook defined is gone,
  ``In``/``Out`` too) in a new history session with the prompt counter back to 1, so the
  executed notebook reads ``In [1]``, ``In [2]``, ... as from a fresh kernel;
- the working directory set to the notebook's own folder;
- every figure closed, the warning filters put back as the kernel started (a notebook's
  ``warnings.simplefilter("ignore")`` ends with it), and Python's "already shown" warning
  registries invalidated (a warning a notebook earns is printed in that notebook even if an
  earlier one printed it).

What stays is what a fresh kernel would rebuild identically: imported modules and compiled code.
That is frozen for the garbage collector after the kernel's imports and after each reset
(:func:`freeze_heap`), so the next reset's collection walks only what a notebook made. The pool
talks to a kernel through a client of its own on the shell channel only, connected once.
Each notebook seeds its own random generators, so its numbers do not depend on what ran before;
``tests/test_warmkernels.py`` runs notebooks warm and fresh and checks they give the same
numbers, and ``dino-rnn study --fresh-kernels`` runs every notebook in a kernel of its own.

A kernel that died, timed out or does not answer the reset within :data:`RESET_TIMEOUT` is shut
down and replaced. Pools are kept per *key* (one study run), so a long-lived worker of a shared
cluster never runs a new study's notebooks in an old study's kernels (or old code):
:func:`close_pool` ends a key's kernels, and asking for a new key ends every other key's.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

# How long a kernel may take to answer the reset before it is replaced by a fresh one.
RESET_TIMEOUT = 30.0
STARTUP_TIMEOUT = 60.0


# The kernel's warning filters as it started (set by remember_fresh_state, in the kernel).
_FRESH_FILTERS: list | None = None


def remember_fresh_state() -> None:
    """Run inside a kernel when it has started: what :func:`reset_here` restores."""
    import warnings

    global _FRESH_FILTERS
    _FRESH_FILTERS = list(warnings.filters)


def reset_here(cwd: str) -> None:
    """Run inside a kernel, before a notebook: the reset described in the module docstring."""
    import gc
    import sys
    import warnings

    from IPython import get_ipython

    os.chdir(cwd)  # first: the previous notebook's folder may be gone
    ip = get_ipython()
    # %reset -f, and a new history session with the prompt counter back at 1, as a fresh kernel
    # has (%reset -f's new_session=False left the counter in the old session: IPython printed
    # "ERROR! Session/line number was not unique in database" into the next notebook).
    ip.reset(new_session=True)  # which ends with a gc.collect()
    if _FRESH_FILTERS is not None:  # a notebook's warnings.simplefilter("ignore") ends with it
        warnings.filters[:] = _FRESH_FILTERS
    with warnings.catch_warnings():  # entering and leaving invalidates every module's "shown" registry
        pass
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")
    gc.freeze()  # what is left is the kernel's (see freeze_heap)


def freeze_heap() -> None:
    """Run inside a kernel after its imports (and :func:`reset_here` ends with the same): every
    object alive moves to the collector's permanent generation (``gc.freeze``). IPython's reset
    collects garbage, and with torch, pandas and matplotlib loaded a full collection walks some
    380,000 objects: 0.18 s before every notebook; it now walks what the last notebook made.
    Reference counting frees frozen objects as before; only cycles among them stay."""
    import gc

    gc.collect()
    gc.freeze()


@dataclass
class WarmKernel:
    """A started kernel (``km``) and a blocking client of ours (``kc``) on its shell channel only.

    papermill runs the notebook through ``km`` (nbclient connects a client of its own from
    ``km.client()``, the asynchronous class :meth:`KernelPool._start` sets). Ours stays connected
    for the kernel's life: it sends the imports and the resets and reads their replies, and it
    listens to nothing else, so a notebook's output never queues up in it. (A client with every
    channel had to be connected anew for each reset, and ``wait_for_ready`` took 0.2 s of it.)"""

    km: object
    kc: object = None

    def connect(self) -> None:
        from jupyter_client.blocking import BlockingKernelClient

        # A session of its own: a shell socket takes its session's id as its name, and the kernel
        # answers only one of two sockets with the same name (nbclient's client shares km's session).
        kc = BlockingKernelClient()
        kc.load_connection_info(self.km.get_connection_info())
        # A request sent before the kernel listens waits in the socket until it does.
        kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        self.kc = kc

    def run(self, code: str, timeout: float) -> dict:
        """Run ``code`` quietly (no output, not in the history); its reply. Raises on a timeout
        (``queue.Empty``) and when the kernel dies before it answers."""
        if self.kc is None:
            self.connect()
        msg_id = self.kc.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise queue.Empty(f"no reply within {timeout:g} s")
            try:
                reply = self.kc.get_shell_msg(timeout=min(left, 1.0))
            except queue.Empty:
                if not self.km.is_alive():
                    raise RuntimeError("the kernel died") from None
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def disconnect(self) -> None:
        if self.kc is not None:
            kc, self.kc = self.kc, None
            try:
                kc.stop_channels()
            except Exception:
                pass

    def shutdown(self) -> None:
        self.disconnect()
        try:
            self.km.shutdown_kernel(now=True)
        except Exception:
            pass


@dataclass
class KernelPool:
    """Idle warm kernels of one process for one key; :meth:`acquire` / :meth:`release` around each notebook."""

    env: dict
    arguments: list
    kernel_name: str = "python3"
    idle: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0  # kernels this pool started (tests read it)
    pending: list = field(default_factory=list)  # threads starting kernels ahead (prestart)

    def _start(self, cwd: str) -> WarmKernel:
        from jupyter_client.manager import KernelManager

        # km.client() is what nbclient runs the notebook with: an asynchronous client, as with the
        # kernels nbclient starts itself (with a blocking one it waits on the kernel's output without
        # ever checking the cell's timeout). Our own reset uses a blocking client (connect).
        km = KernelManager(kernel_name=self.kernel_name, client_class="jupyter_client.asynchronous.AsyncKernelClient")
        km.start_kernel(cwd=cwd, env=dict(self.env), extra_arguments=list(self.arguments))
        k = WarmKernel(km)
        try:
            if not _ok(k.run(_here("remember_fresh_state()"), STARTUP_TIMEOUT)):
                raise RuntimeError(f"a new kernel could not import {__name__}")
        except BaseException:
            k.shutdown()
            raise
        self.started += 1
        return k

    def prestart(self, cwd: str, code: str = "") -> None:
        """Start a kernel now, in the background, and run ``code`` in it (imports a notebook will
        need); :meth:`acquire` then finds it idle. Failures are silent: acquire starts one itself."""

        def start() -> None:
            try:
                k = self._start(cwd)
            except Exception:
                return
            if code:
                try:
                    k.run(code, STARTUP_TIMEOUT)
                    k.run(_here("freeze_heap()"), STARTUP_TIMEOUT)
                except Exception:
                    pass
            with self.lock:
                self.idle.append(k)

        t = threading.Thread(target=start, name="dino-rnn-prestart-kernel", daemon=True)
        t.start()
        self.pending.append(t)

    def acquire(self, cwd: str) -> WarmKernel:
        """An idle kernel reset for a notebook running in ``cwd``, or a new kernel started there."""
        self.wait_prestarted()
        while True:
            with self.lock:
                k = self.idle.pop() if self.idle else None
            if k is None:
                return self._start(cwd)
            if _reset(k, cwd):
                return k
            k.shutdown()

    def release(self, k: WarmKernel, reusable: bool) -> None:
        """Back to the pool after a notebook (``reusable``: it ran to the end or stopped at a cell's
        error, and the kernel is alive); else shut down."""
        if reusable and k.km.is_alive():
            with self.lock:
                self.idle.append(k)
        else:
            k.shutdown()

    def __enter__(self) -> "KernelPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_prestarted(self) -> None:
        """Wait for the kernels :meth:`prestart` is starting (they are idle after)."""
        for t in self.pending:
            t.join()
        self.pending.clear()

    def close(self) -> None:
        self.wait_prestarted()
        with self.lock:
            idle, self.idle = self.idle, []
        for k in idle:
            k.shutdown()


def _reset(k: WarmKernel, cwd: str) -> bool:
    """Reset ``k`` for a notebook in ``cwd``; False when it does not answer properly in time."""
    try:
        if not k.km.is_alive():
            return False
        return _ok(k.run(_here(f"reset_here({cwd!r})"), RESET_TIMEOUT))
    except Exception:  # timed out (still busy with a cell), dead, ...
        return False


def _here(call: str) -> str:
    """Kernel code that calls ``call`` (e.g. ``"freeze_heap()"``) of this module, in the kernel."""
    return f"__import__({__name__!r}, fromlist=['_']).{call}"


def _ok(reply: dict) -> bool:
    """True for the reply of code that ran without an error."""
    return reply["content"]["status"] == "ok"


def import_in_background(*modules: str, then: Callable[[], object] | None = None) -> threading.Thread:
    """Import ``modules`` in a daemon thread, then call ``then`` (if given); errors are ignored
    (whoever needs one imports it again and sees the error). For imports and warm-ups whose cost
    would otherwise land on the critical path."""
    import importlib

    def run() -> None:
        for m in modules:
            try:
                importlib.import_module(m)
            except Exception:
                pass
        if then is not None:
            try:
                then()
            except Exception:
                pass

    t = threading.Thread(target=run, name="dino-rnn-import", daemon=True)
    t.start()
    return t


_POOLS: dict[str, KernelPool] = {}
_POOLS_LOCK = threading.Lock()


def pool(key: str, env: dict, arguments: list) -> KernelPool:
    """This process's pool for ``key`` (made on first use); the pools of other keys are closed."""
    with _POOLS_LOCK:
        old = [_POOLS.pop(k) for k in list(_POOLS) if k != key]
        p = _POOLS.get(key)
        if p is None:
            p = _POOLS[key] = KernelPool(dict(env), list(arguments))
    for o in old:
        o.close()
    return p


def close_pool(key: str | None = None) -> int:
    """Shut down this process's kernels of ``key`` (None: every key); returns how many pools closed."""
    with _POOLS_LOCK:
        keys = [k for k in _POOLS if key is None or k == key]
        closing = [_POOLS.pop(k) for k in keys]
    for p in closing:
        p.close()
    return len(closing)


atexit.register(close_pool)

__all__ = ["KernelPool", "WarmKernel", "pool", "close_pool", "reset_here", "import_in_background", "RESET_TIMEOUT"]

"""Where the runner's tasks run: a Dask cluster, started here or reached at ``--scheduler``.

One execution path for ``dino-rnn study`` and ``dino-rnn sweep``:

    with Executor(scheduler=None, workers=None) as ex:   # None: a local cluster sized to the machine
        for index, outcome in ex.run(fn, items):        # as the tasks finish, in any order
            ...                                          # outcome: fn(item)'s return value, or the
                                                         # exception it raised (a TaskFailed)

``fn`` must be a module-level function of :mod:`dino_rnn` (workers import it by name) taking one
picklable item and returning picklable data; it must not rely on a filesystem shared with the
client: everything it needs comes in ``item``, everything it produced goes back in its result.

Tasks are handed to the scheduler one per worker thread, highest priority first, and the next
as one finishes (:meth:`Executor.run`): the first worker free takes the longest task left.

A worker that dies mid-task (killed, out of memory) costs that task a new start on another
worker: the scheduler does that by itself, up to ``distributed.scheduler.allowed-failures``
times (default 3; then the task is a :class:`TaskFailed` naming the dead workers). ``retries``
is for tasks that raise: the study's tasks never do (a failed notebook is a result).

The local cluster: one worker process per core (``workers``), one thread each; the scheduler and
the nannies run in this process, and each worker process exits as soon as this one is gone,
even SIGKILLed (distributed's worker processes watch a pipe from their parent), and its
notebook's kernel with it (jupyter_client tells the kernel its parent); tests/test_study.py
kills a study and checks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .params import ParameterError

# How long to wait for a ``--scheduler`` to answer before refusing it.
CONNECT_TIMEOUT = 10.0
# Every worker of a local cluster runs with these (a task sets them again for its kernels anyway).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@dataclass
class TaskFailed:
    """A task that raised (for its own reasons), or whose workers kept dying under it."""

    error: str


def _has_bokeh() -> bool:
    """On the scheduler: can it draw its dashboard?"""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _quiet_logs(level=logging.CRITICAL) -> None:
    """Dask's loggers in this process: nothing on the terminal from a normal start or shutdown."""
    for name in ("distributed", "distributed.client", "distributed.scheduler", "distributed.nanny",
                 "distributed.worker", "distributed.core", "distributed.comm", "distributed.batched",
                 "distributed.process", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(level)


class Executor:
    """A Dask ``distributed`` client: a local cluster (one thread per worker process) or ``scheduler``."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None, log: Callable = print,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.scheduler, self.workers, self.log = scheduler, workers, log
        self.connect_timeout = connect_timeout
        self.client = self.cluster = None

    def __enter__(self) -> "Executor":
        import dask
        from distributed import Client, LocalCluster

        _quiet_logs()
        if self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout=self.connect_timeout, set_as_default=False)
            except Exception as e:  # refused, unreachable, timed out, not a Dask scheduler, bad address
                reason = f"{type(e).__name__}: {e}".splitlines()[0]
                raise ParameterError(
                    f"--scheduler {self.scheduler!r}: no Dask scheduler answered within "
                    f"{self.connect_timeout:.0f} s ({reason}); start one (dask scheduler) or check the address"
                ) from None
        else:
            with dask.config.set({"distributed.worker.daemon": False, "distributed.admin.tick.limit": "1h"}):
                self.cluster = LocalCluster(
                    n_workers=self.workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                    dashboard_address=":0", silence_logs=logging.CRITICAL, host="127.0.0.1",
                    env=WORKER_ENV,
                )
            self.client = Client(self.cluster, set_as_default=False)
        return self

    def __exit__(self, *exc) -> None:
        _quiet_logs()
        try:
            if self.client is not None:
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's address, when the scheduler serves one, else None.

        A scheduler always answers HTTP (its health and metrics routes), but its dashboard
        pages need ``bokeh`` where the scheduler runs (not a dependency of dino_rnn).
        """
        try:
            if "dashboard" not in (self.client.scheduler_info().get("services") or {}):
                return None
            if not self.client.run_on_scheduler(_has_bokeh):
                return None
            return self.client.dashboard_link
        except Exception:
            return None

    @property
    def n_threads(self) -> int:
        """Task threads over all workers (0 when unknown or none)."""
        try:
            return sum(self.client.nthreads().values())
        except Exception:
            return 0

    @property
    def n_workers(self) -> int:
        try:
            return len(self.client.scheduler_info().get("workers") or {})
        except Exception:
            return 0

    def everywhere(self, fn: Callable, *args) -> None:
        """``fn(*args)`` once in every worker process (best effort: a worker that fails is skipped)."""
        try:
            self.client.run(fn, *args)
        except Exception:
            pass

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any], retries: int = 2,
            priorities: Sequence[int] | None = None) -> Iterator[tuple[int, Any]]:
        """``fn(item)`` for every item, as tasks; yields ``(index, result or TaskFailed)`` as they finish.

        ``priorities``: higher starts first (default: the items' order). The scheduler is handed one
        task per worker thread, and the next (the highest priority left) when one finishes, so the
        first worker free takes it. (Handed every task at once, Dask sends the first few to workers
        as they are submitted: in a one-seed study the aⁿbⁿ lab's worker also held the next-longest
        notebook while the other worker, done sooner, went idle for 5 s at the end.) A worker that
        joins a running cluster gets work as the next task finishes. ``retries``: new starts for a
        task that raised (a dead worker's tasks are started again by the scheduler anyway).
        Leaving the loop early (an exception, Ctrl-C) cancels the tasks not finished.
        """
        from distributed import as_completed

        if priorities is None:
            priorities = [len(items) - i for i in range(len(items))]
        waiting = sorted(range(len(items)), key=lambda i: -priorities[i])  # highest priority first
        futures: dict = {}
        running = as_completed(loop=self.client.loop)

        def hand_out() -> None:
            slots = max(1, self.n_threads)  # asked again each time: a cluster may grow
            while waiting and len(futures) < slots:
                i = waiting.pop(0)
                fut = self.client.submit(fn, items[i], pure=False, retries=retries, priority=priorities[i])
                futures[fut] = i
                running.add(fut)

        try:
            hand_out()
            for fut in running:
                i = futures.pop(fut)
                try:
                    yield i, fut.result()
                except Exception as e:  # noqa: BLE001
                    yield i, TaskFailed(f"{type(e).__name__}: {e}".splitlines()[0])
                fut.release()
                hand_out()
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                try:
                    self.client.cancel(pending)
                except Exception:
                    pass

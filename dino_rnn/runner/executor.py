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

The local cluster: one worker process per core (``workers``, at most :func:`max_jobs`), one thread
each; the scheduler and the nannies run in this process, and each worker process exits as soon as
this one is gone, even SIGKILLed (distributed's worker processes watch a pipe from their parent),
and its notebook's kernel with it (jupyter_client tells the kernel its parent); tests/test_study.py
kills a study and checks. The workers ignore SIGINT, so Ctrl-C acts on this process alone, which
closes the cluster (a Ctrl-C while the workers start takes effect once they are up). ``tmpdir``:
where every temporary file of the cluster goes (its scratch space; the workers' ``TMPDIR`` and
``JUPYTER_RUNTIME_DIR``, which their kernels inherit), for the caller to remove.

``--scheduler`` is checked before any work (:func:`check_scheduler`), and refused unless a Dask
scheduler answers there within :data:`CONNECT_TIMEOUT`, whatever listens (:func:`connect`).
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import re
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from dino_rnn.settings import ParameterError, positive_int

# How long to wait for a ``--scheduler`` to answer before refusing it.
CONNECT_TIMEOUT = 10.0
# A local cluster's workers per core, at most (``$DINO_RNN_MAX_JOBS`` overrides the limit): a worker
# runs one notebook at a time on one core, in a kernel of its own (worker and kernel: ~0.6 GB at
# their peak in a smoke study), so more workers than cores only share the cores and fill the memory.
MAX_JOBS_PER_CORE = 4
# How long a notebook's kernel may go on after its worker died (ipykernel checks its parent each second).
KERNEL_ORPHAN_SECONDS = 2.0
# Every worker of a local cluster runs with these (a task sets them again for its kernels anyway).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@dataclass
class TaskFailed:
    """A task that raised (for its own reasons), or whose workers kept dying under it."""

    error: str


def cores() -> int:
    return os.cpu_count() or 1


def max_jobs() -> int:
    """The most workers a local cluster may start: ``$DINO_RNN_MAX_JOBS``, else :data:`MAX_JOBS_PER_CORE` per core."""
    raw = os.environ.get("DINO_RNN_MAX_JOBS", "").strip()
    if not raw:
        return MAX_JOBS_PER_CORE * cores()
    n = int(raw) if re.fullmatch(r"\d{1,9}", raw) else 0
    if n < 1:
        raise ParameterError(f"DINO_RNN_MAX_JOBS must be a whole number of at least 1, not {raw[:40]!r}")
    return n


def check_jobs(jobs) -> int:
    """``--jobs`` checked against :func:`max_jobs`; None: one worker per core (within the limit)."""
    limit = max_jobs()
    if jobs is None:
        return min(cores(), limit)
    jobs = positive_int("--jobs", jobs)
    if jobs > limit:
        why = ("DINO_RNN_MAX_JOBS" if os.environ.get("DINO_RNN_MAX_JOBS", "").strip()
               else f"{MAX_JOBS_PER_CORE} per core, {cores()} core(s) here")
        shown = jobs if jobs < 10**9 else "1000000000 or more"
        raise ParameterError(
            f"--jobs {shown} asks for more workers than the {limit} a local cluster may start ({why}: a worker "
            f"runs one task at a time on one core, with ~0.6 GB of memory); give --jobs {limit} or fewer, "
            "or set DINO_RNN_MAX_JOBS=N to allow more"
        )
    return jobs


def check_scheduler(address) -> str:
    """``--scheduler`` as typed, once it reads as a Dask address (``[tcp://]HOST:PORT``); else one line."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port
    from distributed.comm.registry import get_backend

    text = address.strip() if isinstance(address, str) else ""
    if not text:
        raise ParameterError("--scheduler needs an address, e.g. tcp://127.0.0.1:8786")
    bad = f"--scheduler {text[:80]!r} is not a Dask scheduler's address"
    try:
        scheme, location = parse_address(text)
        get_backend(scheme)
        host, port = parse_host_port(location)
    except Exception as e:  # noqa: BLE001  (distributed's parsers raise ValueError, TypeError, ...)
        raise ParameterError(f"{bad} ({str(e).splitlines()[0][:120]}); give one like tcp://HOST:8786") from None
    if scheme == "inproc" or not host or re.search(r"\s", host) or not 0 < port < 65536:
        raise ParameterError(f"{bad}; give one like tcp://HOST:PORT (a host name or address, a port 1-65535)")
    if scheme in ("tls", "wss") and _connection_args().get("ssl_context") is None:
        raise ParameterError(
            f"--scheduler {text[:80]!r}: {scheme}:// needs this client's TLS certificates in Dask's configuration "
            "(distributed.comm.tls.ca-file, .client.cert, .client.key); set them or use tcp://"
        )
    return text


def _connection_args() -> dict:
    from distributed.security import Security

    return Security().get_connection_args("client")


async def _identity(address: str, timeout: float) -> dict:
    """The identity of the Dask server at ``address`` (one connection, closed after)."""
    from distributed.comm import connect as dask_connect

    comm = await dask_connect(address, timeout=timeout, **_connection_args())
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def _ask_identity(address: str, timeout: float) -> tuple[str, Any]:
    """``("ok", identity)``, ``("error", exception)`` or ``("timeout", None)``, within ``timeout`` (+1 s)
    whatever answers: distributed's own connect waits for the handshake with no time limit."""
    import asyncio
    import socket

    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    answer: list = []

    deadline = time.monotonic() + timeout

    def ask() -> None:
        try:
            host, port = parse_host_port(parse_address(address)[1])
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            left = max(0.1, deadline - time.monotonic())
            answer.append(("ok", asyncio.run(asyncio.wait_for(_identity(address, left), left))))
        except BaseException as e:  # noqa: BLE001  (a hostile peer can make the reader raise anything)
            answer.append(("timeout", None) if isinstance(e, asyncio.TimeoutError) else ("error", e))

    t = threading.Thread(target=ask, name="dino-rnn-scheduler-probe", daemon=True)
    t.start()
    t.join(timeout + 1.0)  # a thread stuck past the deadline is left behind (a daemon)
    return answer[0] if answer else ("timeout", None)


def _refusal(address: str, timeout: float, outcome: str, value: Any) -> str | None:
    """What is wrong with the answer :func:`_ask_identity` got (None: a scheduler answered)."""
    import socket

    if outcome == "ok" and isinstance(value, dict) and value.get("type") == "Scheduler":
        return None
    if outcome == "ok":
        kind = value.get("type") if isinstance(value, dict) and isinstance(value.get("type"), str) else None
        return (f"a Dask {kind[:40]} answers there, not a scheduler" if kind
                else "what answers there speaks Dask's protocol but is not a scheduler")
    if isinstance(value, socket.gaierror):
        return f"its host name does not resolve ({value.strerror or value})"
    answered = f"no Dask scheduler answered within {timeout:.0f} s"
    if outcome == "timeout":
        return answered
    if isinstance(value, OSError):
        return f"{answered} ({type(value).__name__}: {value})".splitlines()[0][:300]
    return f"{answered} (what answers there does not speak Dask's protocol)"  # an HTTP server, say


def connect(address: str, timeout: float = CONNECT_TIMEOUT):
    """A client of the Dask scheduler at ``address``, or a :class:`ParameterError` within ``timeout`` (+1 s)."""
    from distributed import Client

    deadline = time.monotonic() + timeout
    address = check_scheduler(address)
    refused = _refusal(address, timeout, *_ask_identity(address, timeout))
    if refused is None:
        client = Client.__new__(Client)
        try:
            client.__init__(address, timeout=max(1.0, deadline - time.monotonic()), set_as_default=False)
            return client
        except Exception as e:  # the scheduler went away since it answered
            client.status = "closed"  # else its __del__ waits for the scheduler again, and prints
            said = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            refused = f"it answered, then the connection failed ({said})".splitlines()[0][:300]
    raise ParameterError(f"--scheduler {address[:80]!r}: {refused}; start one (dask scheduler) or check the address")


@contextmanager
def temporary_files_in(folder):
    """While open, this process's temporary files (``tempfile``) and its children's (``TMPDIR``,
    ``JUPYTER_RUNTIME_DIR``) go to ``folder`` (None: nothing changes)."""
    if folder is None:
        yield
        return
    keys = ("TMPDIR", "JUPYTER_RUNTIME_DIR")
    before, before_env = tempfile.tempdir, {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, str(folder)))
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before
        for k, v in before_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def removed_after(folder, tmp):
    """``tmp`` (a folder ``folder.new_marked`` made) removed as the block ends, however it ends
    (None: nothing); one that cannot be removed yet is left to the next run's ``folder.recover()``."""
    try:
        yield tmp
    finally:
        for _ in range(10 if tmp is not None else 0):
            try:
                folder.abandon(Path(tmp))
                break
            except OSError:  # a process still writing there is exiting
                time.sleep(0.5)


# A witness of this process group's SIGINT while this process ignores it: exits with status 3 on
# SIGINT, with 0 when its stdin closes.
_WITNESS = "import os, signal, sys\nsignal.signal(signal.SIGINT, lambda *a: os._exit(3))\nsys.stdin.buffer.read()\n"


@contextmanager
def _interrupts_deferred():
    """SIGINT ignored while open, so that the processes started meanwhile inherit that; a Ctrl-C
    that came meanwhile (to this process group) is raised as the block ends. Main thread only."""
    import subprocess
    import sys

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        witness = subprocess.Popen([sys.executable, "-S", "-c", _WITNESS], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, ValueError):
        witness = None
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)
        if witness is not None:
            witness.stdin.close()
            interrupted = witness.wait() == 3
    if witness is not None and interrupted:
        raise KeyboardInterrupt


def _local_worker(dask_worker=None) -> None:
    """In a local cluster's worker process (also one its nanny started again): ignore SIGINT (Ctrl-C
    is for the study's process), and at its exit leave its objects out of the interpreter's last
    collections (``gc.freeze``): the study waits for its workers to exit, 0.07 instead of 0.37 s."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    atexit.register(gc.freeze)


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


# Python's resource tracker removes the semaphores of worker processes a Ctrl-C or a kill cut short,
# and warns about them on stderr as it does: nothing the user can act on.
_TRACKER_WARNINGS = "ignore::UserWarning:multiprocessing.resource_tracker"


def _start_resource_tracker() -> None:
    """Start this process's resource tracker (if it is not running yet) without that warning."""
    from multiprocessing import resource_tracker

    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [before, _TRACKER_WARNINGS]))
    try:
        resource_tracker.ensure_running()
    finally:
        if before is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = before


def _local_cluster(workers: int, tmpdir=None):
    """A local cluster of ``workers`` processes, its temporary files in ``tmpdir``."""
    import copy

    import dask
    from distributed import LocalCluster

    # No profiler: Dask's samples every worker thread's stack every 10 ms (for the dashboard's Profile
    # page); in a one-seed study it took ~8 s of the 94 s of CPU, on a 2-core machine ~4 s of the 50 s
    # wall (measured in pairs, on and off). A cluster of your own (--scheduler) keeps its configuration.
    env, config = dict(WORKER_ENV), {"distributed.worker.daemon": False, "distributed.admin.tick.limit": "1h",
                                     "distributed.worker.profile.enabled": False}
    if tmpdir is not None:
        env.update(TMPDIR=str(tmpdir), JUPYTER_RUNTIME_DIR=str(tmpdir))
        config["temporary-directory"] = str(tmpdir)
    _start_resource_tracker()
    with dask.config.set(config), temporary_files_in(tmpdir):
        # Each nanny hands its worker the configuration it was made with, also when it starts the
        # worker again after a death; a copy, since the nanny's shares its inner dicts with the
        # global one, which the end of this ``with`` puts back (a restarted worker profiled again).
        return LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=logging.CRITICAL, host="127.0.0.1", env=env,
            local_directory=str(tmpdir) if tmpdir is not None else None, config=copy.deepcopy(dask.config.config),
        )


class Executor:
    """A Dask ``distributed`` client: a local cluster (one thread per worker process) or ``scheduler``."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None, log: Callable = print,
                 connect_timeout: float = CONNECT_TIMEOUT, tmpdir=None):
        self.scheduler, self.workers, self.log = scheduler, workers, log
        self.connect_timeout = connect_timeout
        self.tmpdir = tmpdir  # a local cluster's temporary files (None: the system's temporary folder)
        self.client = self.cluster = None

    def __enter__(self) -> "Executor":
        from distributed import Client

        _quiet_logs()
        if self.scheduler:
            self.log(f"connecting to the cluster at {self.scheduler} ...")
            self.client = connect(self.scheduler, self.connect_timeout)
            return self
        workers = check_jobs(self.workers)
        self.log(f"starting a local cluster of {workers} worker{'s' * (workers != 1)} ...")
        try:
            with _interrupts_deferred():  # the workers start with SIGINT ignored: Ctrl-C is for this process
                self.cluster = _local_cluster(workers, self.tmpdir)
            self.client = Client(self.cluster, set_as_default=False)
            self.client.register_worker_callbacks(setup=_local_worker)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        _quiet_logs()
        try:
            if self.client is not None:
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
                if exc and exc[0] is not None and self.tmpdir is not None:
                    # A kernel that was running a notebook outlives its worker by up to a second
                    # (ipykernel polls its parent each second), writing into tmpdir meanwhile.
                    time.sleep(KERNEL_ORPHAN_SECONDS)

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

"""Where the runner's tasks run: a Dask cluster, started here or reached at ``--scheduler``.

One execution path for ``dino-rnn study`` and ``dino-rnn sweep``:

    with Executor(scheduler=None, workers=None) as ex:   # None: a local cluster sized to the machine
        for index, outcome in ex.run(fn, items):        # as the tasks finish, in any order
            ...                                          # outcome: fn(item)'s return value, or the
                                                         # exception it raised (a TaskFailed)

``fn`` must be a module-level function of :mod:`dino_rnn` (workers import it by name) taking one
picklable item and returning picklable data; it must not rely on a filesystem shared with the
client: everything it needs comes in ``item``, everything it produced goes back in its result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence


@dataclass
class TaskFailed:
    """A task that raised (for its own reasons, not because its worker died)."""

    error: str


class Executor:
    """A Dask ``distributed`` client: a local cluster (one thread per worker process) or ``scheduler``."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None, log: Callable = print):
        self.scheduler, self.workers, self.log = scheduler, workers, log
        self.client = self.cluster = None

    def __enter__(self) -> "Executor":
        from distributed import Client, LocalCluster

        if self.scheduler:
            self.client = Client(self.scheduler)
        else:
            self.cluster = LocalCluster(n_workers=self.workers or os.cpu_count() or 1, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link
        except Exception:
            return None

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any], retries: int = 2) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        futures = {self.client.submit(fn, item, pure=False, retries=retries): i for i, item in enumerate(items)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                yield i, fut.result()
            except Exception as e:  # noqa: BLE001
                yield i, TaskFailed(f"{type(e).__name__}: {e}".splitlines()[0])

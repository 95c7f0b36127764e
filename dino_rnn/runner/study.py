"""The study runner behind ``dino-rnn study``: every notebook through papermill, then the report.

For each seed, every model notebook (``notebooks/NN_*.ipynb``) runs once with the same
parameters, as tasks on a Dask cluster (:mod:`dino_rnn.runner.executor`: a local one of ``jobs``
workers, or the one at ``scheduler``; see :func:`notebook_task`). Executed notebooks are kept
(showing the results folder, never the folder they ran in); the comparison table and plots
are written from the metrics the notebooks wrote; ``comparison.ipynb`` runs next; last,
:mod:`dino_rnn.report.site` writes ``html/index.html``, the page people open first, and every
notebook's two HTML reports. The terminal shows a line as each phase starts (the cluster, the
workers' kernels, the notebooks, the report), one progress bar and one line per finished
notebook (``quiet``: none of them).

Where a run writes, and how it keeps the user's files safe, is :mod:`dino_rnn.runner.folders`:
by default ``results/study/`` (ignored by git), never the committed ``results/reference/``
unless asked (``reference=True``); one study at a time per folder; a folder holding files
no study wrote is refused; the new results replace the old in one atomic step, so a kill
at any moment leaves the previous complete results or the new ones. One failing notebook
does not stop the others: it is kept with its traceback, the summary names it, the exit
status is 1. A notebook cell that runs longer than ``cell_timeout`` seconds fails its
notebook the same way.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from unittest.mock import patch

from tqdm import tqdm

from dino_rnn import settings as P
from dino_rnn.data import read_names, resolve_data_path, sha256_of, split_names
from dino_rnn.runner.executor import Executor, TaskFailed, check_jobs, removed_after, temporary_files_in
from dino_rnn.files import write_json
from dino_rnn.report.tables import load_metrics, reference_check, reference_summary, select_runs, write_comparison
from dino_rnn.files import MARKER, REFERENCE, STUDY, STUDY_JSON
from dino_rnn.runner.folders import ResultsFolder
from dino_rnn.report.site import HTML, INDEX, build_site, index_figures, path_substitutions, versions, warm_exporters
from dino_rnn.runner.warmkernels import KernelPool, close_pool, import_in_background, pool as worker_pool

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
COMPARISON = "comparison.ipynb"
GENERATOR = "dino-rnn study"  # what the report pages say made them
# A generous bound on one notebook cell (the longest, the aⁿbⁿ lab's training, takes ~1 minute here):
# a hung kernel fails its notebook instead of hanging the study.
CELL_TIMEOUT = 1800
# Smoke mode: small enough for CI, large enough that every code path runs.
SMOKE = {"epochs": 1, "max_names": 40, "extra": {"ANBN_EPOCHS": 2}}


def model_notebooks() -> list[Path]:
    """The study's model notebooks, in order: ``notebooks/NN_*.ipynb``."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


@dataclass
class Job:
    notebook: str
    seed: int
    parameters: dict
    output: str
    status: str = "pending"  # ok or failed
    message: str = ""
    seconds: float = 0.0


@dataclass
class StudyResult:
    out: str
    jobs: list[Job] = field(default_factory=list)
    seconds: float = 0.0
    report_error: str = ""
    diverged: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)  # epochs, seeds, max_names, data, jobs
    reference: str = ""  # how the runs compare with the committed reference (one line)
    notes: list[str] = field(default_factory=list)
    started: str = ""
    finished: str = ""

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.diverged and not self.report_error


def declared_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


# The kernels' own log: jupyter_client's kernels talk to their worker over loopback TCP and
# log a warning about it at start-up, and an error when the interrupt that jupyter_client sends
# before every shutdown lands while the kernel is finishing a reply. Neither is about the
# notebook (a cell's errors and warnings are in the executed notebook), and on the terminal
# they break the progress bar: the kernels log critical messages only.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


ENGINE = "dino-rnn"  # papermill's nbclient engine, writing the executed notebook once (see _engine)


@functools.cache
def _engine() -> str:
    """Register (once) and name papermill's nbclient engine with one change: the executed notebook
    is written when it ends (run, failed, timed out or its kernel dead: papermill's
    ``notebook_complete`` runs in a ``finally``), not also as every cell starts and ends. Those writes
    keep a notebook's progress on disk for a person watching a long run; a study's tasks run in a
    temporary folder nobody watches, where they cost ~6 ms each in the aⁿbⁿ lab (131 writes, 0.6 s
    of its worker's CPU; ~1.2 s a seed in all)."""
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    class WrittenAtEnd(NotebookExecutionManager):
        def save(self, **kwargs):
            if self.end_time is not None:  # set by notebook_complete, just before its save
                super().save(**kwargs)

    class Engine(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                             autosave_cell_every=30, **kwargs):  # papermill's Engine.execute_notebook, but its manager
            nb_man = WrittenAtEnd(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                                  autosave_cell_every=autosave_cell_every)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register(ENGINE, Engine)
    return ENGINE


def _execute(job: Job, cwd: str, cell_timeout: float | None = CELL_TIMEOUT, paths: tuple = (),
             kernels: KernelPool | None = None) -> Job:
    """Run one notebook here (a task's, or the comparison); never raises: the job records what happened.

    ``paths``: (results folder, staging folder, names file) — the executed notebook is
    rewritten to show the results folder, not the staging folder it ran in (see
    :func:`dino_rnn.report.site.clean_executed`). ``kernels``: run it in a warm kernel of this pool
    (:mod:`dino_rnn.runner.warmkernels`), reset for it; None: in a fresh kernel of its own.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    warm, reusable = None, False
    try:
        if kernels is not None:
            warm = kernels.acquire(cwd)
        papermill.execute_notebook(
            str(Path(cwd) / job.notebook),
            job.output,
            parameters=job.parameters,
            cwd=cwd,
            kernel_name="python3",
            engine_name=_engine(),
            progress_bar=False,
            log_output=False,
            execution_timeout=cell_timeout,
            # A cell's stream outputs as one, its carriage returns applied, as a notebook shows
            # them: a text progress bar is its last state, not one output per update (the aⁿbⁿ
            # lab's training cell had 829, and its report a line for each).
            coalesce_streams=True,
            extra_arguments=KERNEL_ARGUMENTS,
            **({"km": warm.km} if warm is not None else {}),  # nbclient connects a client of its own
        )
        job.status, reusable = "ok", True
    except PapermillExecutionError as e:  # a cell raised: the kernel itself is fine
        job.status, job.message, reusable = "failed", f"{e.ename}: {e.evalue}".strip(), True
    except Exception as e:  # kernel died, cell timed out, notebook unreadable, ...
        job.status, job.message = "failed", f"{type(e).__name__}: {e}".splitlines()[0]
    finally:
        if warm is not None:
            kernels.release(warm, reusable)
    job.seconds = time.perf_counter() - t0
    if paths and Path(job.output).exists():
        from dino_rnn.report.site import clean_executed

        try:
            clean_executed(job.output, *paths)
        except Exception as e:  # the notebook result stands
            job.message = (job.message + f"; could not tidy the executed notebook: {e}").lstrip("; ")
    return job


# What a notebook's kernel runs with, wherever it runs: one intra-op thread (the per-name work is
# too small to share, and the cluster's workers are the parallelism), matplotlib without a
# display, and tqdm's text bar (the widget needs a script from the network).
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "DINO_RNN_PROGRESS": "text"}
# What a kernel must not inherit from its worker: Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 for
# its workers (to hand memory back to the OS), and a kernel that inherits it pays an mmap/munmap and
# page faults for every array above 64 KiB a training step allocates: the NumPy LSTM's epoch took
# 0.33 s instead of 0.28 s with it (0.42 s in a study, with the other kernel busy beside it).
KERNEL_ENV_UNSET = ("MALLOC_TRIM_THRESHOLD_",)


def kernel_environ() -> dict:
    """The environment a notebook's kernel starts with: this process's, with :data:`KERNEL_ENV`
    set and :data:`KERNEL_ENV_UNSET` removed."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV_UNSET}
    return {**env, **KERNEL_ENV}


def _kernel_env():
    """This process's environment as :func:`kernel_environ` (papermill's fresh kernels inherit it),
    restored after."""
    return patch.dict(os.environ, kernel_environ(), clear=True)


# What the comparison notebook imports, loaded into its kernel while the workers train (scipy.stats:
# the paired intervals of two or more seeds, 0.6 s to import).
COMPARISON_IMPORTS = "import pandas, matplotlib.pyplot, scipy.stats, dino_rnn.report.tables"
# What the model notebooks import, and what torch imports the first time an optimizer is made
# (dino_rnn.fast.torch_private.preload_optimizer_imports), loaded into each worker's first kernel
# while the study gets ready.
NOTEBOOK_IMPORTS = ("import torch, pandas, matplotlib.pyplot, dino_rnn.experiment, dino_rnn.lab, dino_rnn.numpy_nets, "
                    "dino_rnn.fast.steps, dino_rnn.fast.torch_private; "
                    "dino_rnn.fast.torch_private.preload_optimizer_imports()")
# What a worker process needs to run a notebook (papermill's import takes seconds: nbformat's
# schema validation builds grammars), and the main process for the report (the explore page reads
# the checkpoints with torch: ~1 s to import, once a core is free rather than at the study's end).
WORKER_MODULES = ("papermill", "dino_rnn.report.site")
REPORT_MODULES = ("jinja2", "nbconvert", "matplotlib.pyplot", "dino_rnn.experiment", "dino_rnn.lab")
# Files of a notebook's results whose text may show the folder it ran in (rewritten to the client's).
_TEXT = {".json", ".ipynb", ".md", ".csv", ".txt", ".html", ".svg", ".tsv"}


def notebook_task(task: dict) -> dict:
    """One notebook, on a Dask worker: a task of the study (see :func:`_run`). Never raises.

    ``task`` carries everything the notebook needs, so a worker needs no filesystem shared
    with the client: the notebook's JSON (``source``), its ``parameters``, the names file's
    bytes and sha256 (checked here), ``cell_timeout``. It runs in a fresh temporary folder
    of its own (the kernel's working directory; ``RESULTS_DIR`` inside it), which it deletes.
    Returns ``{"status", "message", "seconds", "files"}``: ``files`` maps every file the notebook
    wrote (below its results folder) and the executed notebook (at ``task["output"]``) to its
    bytes, with the temporary folder's paths in their text shown as the client's
    (``task["paths"]``: staging folder, names file, notebooks folder), as if the notebook had
    run there.
    """
    import hashlib
    import shutil
    import tempfile

    t0 = time.perf_counter()
    out = {"status": "failed", "message": "", "seconds": 0.0, "files": {}}
    tmp = Path(os.path.realpath(tempfile.mkdtemp(prefix="dino-rnn-task-")))
    try:
        results = tmp / "results"
        results.mkdir()
        params = dict(task["parameters"])
        subs = []  # (path here, the client's), longest first
        if "RESULTS_DIR" in task["wants"]:
            params["RESULTS_DIR"] = str(results)
            subs.append((str(results), task["paths"]["staging"]))
        if "DATA" in task["wants"]:
            data = task["data"]
            if hashlib.sha256(data).hexdigest() != task["data_sha256"]:
                raise ValueError("the names file's bytes changed on their way to the worker (sha256 mismatch)")
            names = tmp / "data" / task["data_name"]
            names.parent.mkdir()
            names.write_bytes(data)
            params["DATA"] = str(names)
            subs.append((str(names), task["paths"]["data"]))
        subs.append((str(tmp), task["paths"]["notebooks"]))
        notebook = tmp / task["notebook"]
        notebook.write_text(task["source"], encoding="utf-8")
        executed = tmp / "executed.ipynb"
        with _kernel_env():  # the kernel's environment, restored after
            job = _execute(Job(task["notebook"], task.get("seed", -1), params, str(executed)), str(tmp),
                           task["cell_timeout"], kernels=_task_kernels(task))
        out["status"], out["message"] = job.status, job.message
        files = {task["output"]: executed} if executed.exists() else {}
        for f in sorted(results.rglob("*")):
            if f.is_file():
                files[f.relative_to(results).as_posix()] = f
        for rel, f in files.items():
            out["files"][rel] = _shown_as_client(f, subs) if f.suffix in _TEXT else f.read_bytes()
        if task.get("report") and task["output"] in out["files"]:
            _report_here(task, out, tmp)
    except Exception as e:  # the names file, the temporary folder, ...: the notebook's failure, not the study's
        out["status"] = "failed"
        out["message"] = (out["message"] + "; " if out["message"] else "") + f"{type(e).__name__}: {e}".splitlines()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def _kernel_pool(key: str | None = None) -> KernelPool:
    """Kernels started as every notebook's kernel is (:func:`kernel_environ`, :data:`KERNEL_ARGUMENTS`):
    this worker's pool for the study ``key``, or (None) a pool of the caller's own."""
    env = kernel_environ()
    return KernelPool(env, KERNEL_ARGUMENTS) if key is None else worker_pool(key, env, KERNEL_ARGUMENTS)


def prepare_worker(kernels_key: str | None) -> None:
    """On each worker, as the study starts (returns at once): with warm kernels, start this worker's
    first kernel with the notebooks' imports loaded; import what a task needs; and once that kernel
    is up, warm the HTML exporters (~0.9 s of CPU, first needed when the notebook ends: on a 2-core
    machine, done beside the kernels' imports, it delayed the first notebook)."""
    import tempfile

    kernels = _kernel_pool(kernels_key) if kernels_key else None
    if kernels is not None:
        kernels.prestart(tempfile.gettempdir(), NOTEBOOK_IMPORTS)

    def then() -> None:
        if kernels is not None:
            kernels.wait_prestarted()
        warm_exporters()

    import_in_background(*WORKER_MODULES, then=then)


def _task_kernels(task: dict) -> KernelPool | None:
    """This worker's warm kernels for the task's study (``task["kernels"]``: its key), or None
    (``--fresh-kernels``: a kernel per notebook)."""
    return _kernel_pool(task["kernels"]) if task.get("kernels") else None


def _report_here(task: dict, out: dict, tmp: Path) -> None:
    """The executed notebook cleaned (as the client would) and its two HTML reports, into ``out``.

    ``task["report"]``: the client's substitutions for the executed notebook (``clean``) and the
    :func:`dino_rnn.report.site.report_key` its reports are made from (``key``), with where they go
    (``html``: their folder below the staging folder). On any error the task returns the
    executed notebook as it is, and the client does the rest.
    """
    from dino_rnn.report.site import Executed, clean_executed, export_report, notebook_title

    try:
        executed = tmp / "report" / task["output"]
        executed.parent.mkdir(parents=True)
        executed.write_bytes(out["files"][task["output"]])
        clean_executed(executed, None, subs=task["report"]["clean"])
        cleaned = executed.read_bytes()
        key = dict(task["report"]["key"])
        key["title"] = notebook_title(executed) + f" (seed {task['seed']})"
        e = Executed(task["notebook"], task["seed"], executed)
        written = export_report(e, tmp / "report" / "html", key)
        html = {f"{task['report']['html']}/{p.name}": p.read_bytes() for p in written}
    except Exception:  # the client cleans it and build_site exports it, as if no task had tried
        return
    out["files"][task["output"]] = cleaned
    out["files"].update(html)
    out["cleaned"], out["report"] = True, key


def _shown_as_client(f: Path, subs: list[tuple[str, str]]) -> bytes:
    """``f``'s text with each path of ``subs`` replaced (raw, and as a JSON string shows it)."""
    try:
        text = f.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return f.read_bytes()
    for here, there in sorted(subs, key=lambda kv: -len(kv[0])):
        text = text.replace(json.dumps(here)[1:-1], json.dumps(there)[1:-1]) if f.suffix in (".json", ".ipynb") \
            else text.replace(here, there)
    return text.encode("utf-8")


def write_returned(staging: Path, files: dict) -> None:
    """A task's files into ``staging``: only below it (a path that would leave it is refused)."""
    root = Path(os.path.realpath(staging))
    if not (root / MARKER).is_file():  # the run was given up: never recreate its folder
        raise FileNotFoundError(f"the staging folder {root} is gone")
    for rel, data in files.items():
        p = Path(rel)
        if not isinstance(rel, str) or not rel or p.is_absolute() or ".." in p.parts or not isinstance(data, bytes):
            raise ValueError(f"a task returned a file outside its results folder: {rel!r}")
        dest = Path(os.path.realpath(root / p))
        if root not in dest.parents:
            raise ValueError(f"a task returned a file outside its results folder: {rel!r}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


# A notebook that failed for one of these failed for the machine's sake, not its own: the run stops
# (the previous results stay) instead of making a results folder of failures.
ROOM_ERRORS = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
               errno.EROFS: "Read-only file system"}


def _stop_if_out_of_room(jobs: list[Job]) -> None:
    """Raise the OSError of a notebook that ran out of disk (or quota), if one did."""
    for j in jobs:
        for code, text in ROOM_ERRORS.items():
            if j.status == "failed" and text in (j.message or ""):
                raise OSError(code, f"{text} (notebook {j.notebook} seed {j.seed})")


def diverged_runs(results_dir) -> list[str]:
    """Runs whose metrics say the loss became NaN or infinite."""
    out = []
    for f in sorted((Path(results_dir) / "metrics").glob("*.json")):
        m = json.loads(f.read_text(encoding="utf-8"))
        if m.get("status") != "ok":
            out.append(f"{m['label']} seed {m['parameters']['seed']}: {m['status']}: {m['message']}")
    return out


def check_inputs(out, epochs, seeds, max_names, data, jobs, reference=False, cell_timeout=CELL_TIMEOUT):
    """Every check that can fail, before any notebook starts. Returns the checked values."""
    epochs = P.positive_int("--epochs", epochs)
    seeds = P.parse_seeds(seeds)
    max_names = P.positive_int("--max-names", max_names, allow_none=True)
    jobs = check_jobs(jobs)  # at most max_jobs() (4 per core, or $DINO_RNN_MAX_JOBS)
    cell_timeout = P.positive_float("--cell-timeout", cell_timeout)
    folder = ResultsFolder(REFERENCE if reference else (STUDY if out is None else out), reference=reference)
    folder.check_owned()
    names, report = read_names(data)  # downloads Dino Names on first use; refuses bad files
    split_names(names, 0)  # refuses too few names
    if not model_notebooks():
        raise P.ParameterError(f"no notebooks found in {NOTEBOOK_DIR}; run dino-rnn from a clone of the project")
    return folder, epochs, seeds, max_names, data, jobs, cell_timeout, report


def run_study(
    out=None,
    *,
    reference: bool = False,
    epochs: int = 40,
    seeds=(0,),
    max_names: int | None = None,
    data=None,
    jobs: int | None = None,
    scheduler: str | None = None,
    extra: dict | None = None,
    cell_timeout: float = CELL_TIMEOUT,
    command: str = "dino-rnn study",
    log=print,
    quiet: bool = False,
    fresh_kernels: bool = False,
) -> StudyResult:
    """Run every notebook for every seed, then write the comparison. See the module docstring.

    ``out``: the results folder (default ``results/study``); ``reference=True`` writes the
    committed reference (``results/reference``) instead. ``fresh_kernels``: every notebook in a
    kernel of its own (default: each worker reuses its kernels, reset between notebooks;
    :mod:`dino_rnn.runner.warmkernels`).
    """
    folder, epochs, seeds, max_names, data, jobs, cell_timeout, report = check_inputs(
        out, epochs, seeds, max_names, data, jobs, reference, cell_timeout)
    if quiet:
        log = lambda *a, **k: None  # noqa: E731
    log(f"data: {report}")
    data_arg = str(Path(data).resolve()) if data is not None else None
    with folder.lock(command):
        folder.recover()  # what killed runs left beside the folder
        folder.check_owned()  # before any work: never replace files a study did not write
        # This run's temporary files (this process's, its kernels', a local cluster's) go to a folder
        # of its own, removed at the end (a killed run's, by the next run's recover()). The comparison
        # notebook runs here, last, in a kernel started (and its imports loaded) while the last
        # notebooks run (None: a fresh kernel for it too). The cluster before any work: a
        # --scheduler that does not answer is refused here.
        with (
            removed_after(folder, folder.new_marked("tmp")) as tmp,
            temporary_files_in(tmp),
            (nullcontext() if fresh_kernels else _kernel_pool()) as comparison_kernel,
            Executor(scheduler, None if scheduler else jobs, log=log, tmpdir=None if scheduler else tmp) as ex,
        ):
            staging = folder.new_staging()
            result = StudyResult(out=str(folder.path), parameters={
                "epochs": epochs, "seeds": seeds, "max_names": max_names, "data": data_arg,
                "jobs": ex.n_workers if scheduler else jobs, "kernels": "fresh" if fresh_kernels else "warm"})
            try:
                _run(result, staging, folder, extra, cell_timeout, None if reference else REFERENCE, log, quiet, ex,
                     comparison_kernel)
                folder.promote(staging)
            except BaseException:
                folder.abandon(staging)
                raise
            finally:
                result.notes = folder.notes
    return result


def _now() -> str:
    """The local time with its UTC offset, to the second (as study.json records it)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _run(result: StudyResult, staging: Path, folder: ResultsFolder, extra, cell_timeout, reference, log,
         quiet: bool = False, ex: Executor | None = None, comparison_kernel: KernelPool | None = None) -> None:
    """The notebooks into ``staging``, then the report; ``result`` records what happened.

    ``comparison_kernel``: the kernels the comparison notebook runs in (None: a fresh one). The
    steps, in order: every worker starts its kernel; the jobs (notebook x seed) and their tasks;
    the tasks on the cluster, longest first; study.json; the comparison notebook; the HTML.
    """
    t0 = time.perf_counter()
    result.started = _now()
    kernels_key = _prepare_workers(ex, result, log)
    result.jobs += plan_jobs(result.parameters, staging, extra)
    # Longest first (as long as the previous run here took, else the committed reference's run),
    # so no long notebook starts last.
    order = longest_first(result.jobs, previous_seconds(folder.path) or previous_seconds(REFERENCE))
    where = f"the cluster at {ex.scheduler}" if ex.scheduler else "a local cluster"
    log(f"running {len(result.jobs)} notebooks ({len(result.parameters['seeds'])} seed(s)) on "
        f"{ex.n_workers or result.parameters['jobs']} worker(s) of {where} into {folder.path}")
    if ex.dashboard_link:
        log(f"dashboard: {ex.dashboard_link}")
    data_path = resolve_data_path(result.parameters["data"])
    paths = (str(folder.path), str(staging), [str(data_path)])
    tasks = _tasks(result, staging, folder.path, data_path, cell_timeout, kernels_key)
    prebuilt = _run_notebooks(ex, tasks, order, result, staging, paths, quiet, comparison_kernel)
    _stop_if_out_of_room(result.jobs)
    closing = None
    if kernels_key:  # the workers' warm kernels of this run, shut down while the report is made
        closing = threading.Thread(target=ex.everywhere, args=(close_pool, kernels_key), daemon=True)
        closing.start()
    log(f"writing the report: {COMPARISON}, then the HTML pages ({HTML}/{INDEX} and every notebook's) ...")
    _check_runs(result, staging, reference, t0)
    drawn = _draw_in_background(staging)  # while the comparison notebook runs in its kernel
    _run_comparison(result, staging, reference, cell_timeout, paths, comparison_kernel)
    result.seconds = time.perf_counter() - t0
    result.finished = _now()
    write_json(staging / STUDY_JSON, _summary(result))
    _build_html(result, folder.path, staging, data_path, prebuilt, drawn, (lambda line: None) if quiet else log)
    if closing is not None:
        closing.join()


def _prepare_workers(ex: Executor, result: StudyResult, log) -> str | None:
    """Every worker gets ready (:func:`prepare_worker`, in the background); the key of this run's
    warm kernels on every worker (None: a fresh kernel per notebook)."""
    if result.parameters.get("kernels") == "fresh":
        kernels_key = None
    else:
        kernels_key = f"study-{os.getpid()}-{uuid.uuid4().hex}"
        log("starting each worker's Jupyter kernel: torch and the package load first "
            "(the first run after an install also compiles the training kernels) ...")
    ex.everywhere(prepare_worker, kernels_key)  # returns at once: the work goes on in the workers' threads
    return kernels_key


def plan_jobs(parameters: dict, staging: Path, extra: dict | None) -> list[Job]:
    """One job per seed and model notebook, given the parameters each notebook declares."""
    jobs = []
    notebooks = {nb: declared_parameters(nb) for nb in model_notebooks()}
    for seed in parameters["seeds"]:
        for nb, declared in notebooks.items():
            base = {
                "EPOCHS": parameters["epochs"],
                "SEED": seed,
                "MAX_NAMES": parameters["max_names"],
                "RESULTS_DIR": str(staging),
                "DATA": parameters["data"],
                **(extra or {}),
            }
            jobs.append(Job(notebook=nb.name, seed=seed, parameters={k: v for k, v in base.items() if k in declared},
                            output=str(staging / "executed" / f"seed{seed}" / nb.name)))
    return jobs


def _tasks(result: StudyResult, staging: Path, results: Path, data_path: Path, cell_timeout, kernels_key) -> list[dict]:
    """Each job as a task for :func:`notebook_task`: all it needs, no shared folder. Each task also
    exports its own notebook's HTML reports, as build_site would from the cleaned executed
    notebook (build_site checks the key and keeps them), in parallel with the others."""
    from dino_rnn.report.site import Executed, report_key, report_substitutions

    data, data_sha256 = data_path.read_bytes(), sha256_of(data_path)
    clean_subs = path_substitutions(str(results), str(staging), [str(data_path)])
    report_subs = report_substitutions(results, staging, [result.parameters["data"], str(data_path)])
    expected = [Executed(COMPARISON, None, staging / "executed" / COMPARISON)]
    expected += [Executed(j.notebook, j.seed, Path(j.output)) for j in result.jobs]
    tasks = []
    for j, e in zip(result.jobs, expected[1:]):
        key = report_key(e, expected, report_subs)
        key["title"] = ""  # the task's, from its executed notebook
        report = {"clean": [list(kv) for kv in clean_subs], "key": key, "html": f"{HTML}/{e.html_dir.rstrip('/')}"}
        params = {k: v for k, v in j.parameters.items() if k not in ("RESULTS_DIR", "DATA")}
        tasks.append({
            "notebook": j.notebook, "seed": j.seed, "source": (NOTEBOOK_DIR / j.notebook).read_text(encoding="utf-8"),
            "parameters": params, "wants": sorted({"RESULTS_DIR", "DATA"} & set(j.parameters)),
            "data": data if "DATA" in j.parameters else b"", "data_sha256": data_sha256,
            "data_name": data_path.name, "cell_timeout": cell_timeout,
            "output": Path(j.output).relative_to(staging).as_posix(),
            "paths": {"staging": str(staging), "data": str(data_path), "notebooks": str(NOTEBOOK_DIR)},
            "report": report, "kernels": kernels_key,
        })
    for j in result.jobs:
        Path(j.output).parent.mkdir(parents=True, exist_ok=True)
    return tasks


def _run_notebooks(ex: Executor, tasks: list[dict], order: list[int], result: StudyResult, staging: Path,
                   paths: tuple, quiet: bool, comparison_kernel: KernelPool | None) -> dict:
    """The tasks on the cluster, in ``order``; each outcome into its job and ``staging``. One bar for
    the whole study (on a terminal only: in a log it would be noise), and one line above it per
    finished notebook; quiet: neither. Returns the reports the tasks exported, by (notebook, seed)."""
    priorities = [0] * len(tasks)
    for rank, i in enumerate(order):
        priorities[i] = len(order) - rank
    prebuilt: dict = {}
    bar = tqdm(total=len(tasks), desc="study", unit="notebook", mininterval=1.0,
               disable=True if quiet else None, file=sys.stderr)
    n_workers, finished = max(1, ex.n_workers or result.parameters["jobs"] or 1), 0
    for i, out in ex.run(notebook_task, tasks, retries=0, priorities=priorities):
        job = result.jobs[i]
        finished += 1
        if finished == 1:
            _start_comparison_kernel(comparison_kernel, result)
        if len(tasks) - finished == min(n_workers, len(tasks)) - 1:
            _a_core_is_free()
        _take_outcome(job, out, staging, paths, prebuilt)
        bar.update()
        if not quiet:
            mark = {"ok": "ok"}.get(job.status, job.status.upper())
            bar.write(f"  {mark:8} {job.notebook} seed {job.seed} ({job.seconds:.0f} s)"
                      f"{': ' + job.message if job.message else ''}", file=sys.stdout)
    bar.close()
    return prebuilt


def _start_comparison_kernel(comparison_kernel: KernelPool | None, result: StudyResult) -> None:
    """The first notebook has finished, so every worker's kernel is up: the comparison's kernel starts
    and, at the lowest CPU priority (``os.nice(19)``: it takes a core only when a notebook leaves one
    idle), imports what the comparison notebook needs and counts the baselines' ladder of every seed
    (half of that notebook's time, which the study waits for at its end). By the study's end the
    workers have stopped, so even at that priority it has a core. (Started when a core was free
    instead, a five-seed study's comparison waited ~4 s for it. In a long study the prestart stops
    waiting after a minute while the kernel works on; the reset before the notebook then waits
    behind that work, and a kernel still busy after the reset's timeout is replaced by a fresh one.)"""
    if comparison_kernel is not None:
        p = result.parameters
        ladder = (f"dino_rnn.report.goodness.warm_ladder({str(resolve_data_path(p['data']))!r}, "
                  f"{list(p['seeds'])!r}, {p['max_names']!r})")
        comparison_kernel.prestart(str(NOTEBOOK_DIR),
                                   f"import os; os.nice(19)\n{COMPARISON_IMPORTS}, dino_rnn.report.goodness\n{ladder}")


def _a_core_is_free() -> None:
    """A worker has nothing left to run, so a core is free: this process loads what the report needs
    (not earlier: beside the workers' first kernels it took a core from their imports)."""
    import_in_background(*REPORT_MODULES, then=warm_exporters)


def _take_outcome(job: Job, out, staging: Path, paths: tuple, prebuilt: dict) -> None:
    """A finished task's outcome into ``job``, its files into ``staging`` (its report into ``prebuilt``)."""
    if isinstance(out, TaskFailed):  # its workers kept dying under it
        job.status, job.message = "failed", out.error
        return
    job.status, job.message, job.seconds = out["status"], out["message"], out["seconds"]
    try:
        write_returned(staging, out["files"])
        if out.get("report"):
            prebuilt[(job.notebook, job.seed)] = out["report"]
        if Path(job.output).exists() and not out.get("cleaned"):
            from dino_rnn.report.site import clean_executed

            clean_executed(job.output, *paths)
    except OSError:  # disk full, permissions: the run stops, the previous results stay
        raise
    except Exception as e:  # this notebook's files were bad (one outside its folder, say)
        job.status = "failed"
        job.message = (job.message + "; " if job.message else "") + f"{type(e).__name__}: {e}".splitlines()[0]


def _check_runs(result: StudyResult, staging: Path, reference, t0: float) -> None:
    """What the notebooks' metrics say (diverged runs; against the committed reference), into
    ``result`` and study.json."""
    result.seconds = time.perf_counter() - t0
    result.diverged = diverged_runs(staging)
    runs, _ = select_runs(load_metrics(staging))
    if reference is not None:
        result.reference = reference_summary(reference_check(runs, load_metrics(reference)))
    write_json(staging / STUDY_JSON, _summary(result))


def _run_comparison(result: StudyResult, staging: Path, reference, cell_timeout, paths: tuple,
                    comparison_kernel: KernelPool | None) -> None:
    """The comparison notebook writes the comparison (write_comparison); if it fails, the study
    writes it itself, so the results folder has it either way."""
    try:
        params = {"RESULTS_DIR": str(staging), "REFERENCE_DIR": str(reference) if reference is not None else None}
        comp = Job(COMPARISON, -1, params, str(staging / "executed" / COMPARISON))
        with _kernel_env():
            comp = _execute(comp, str(NOTEBOOK_DIR), cell_timeout, paths, kernels=comparison_kernel)
        if comp.status != "ok":
            result.report_error = f"{COMPARISON}: {comp.message}"
            write_comparison(staging, reference=reference)
    except Exception as e:
        result.report_error = f"comparison: {type(e).__name__}: {e}".splitlines()[0]


def _build_html(result: StudyResult, results: Path, staging: Path, data_path: Path, prebuilt: dict, drawn,
                log) -> None:
    """Last, from everything above: html/index.html and every notebook's two reports."""
    try:
        figures, explore = drawn if drawn is not None else (None, None)
        try:
            figures = figures.result() if figures is not None else None
        except Exception:  # build_site draws them, and reports what went wrong
            figures = None
        build_site(results, staging / HTML, staging=staging, generator=GENERATOR, log=log,
                   prebuilt=prebuilt, data=[str(data_path)], figures=figures, explore=explore)
    except Exception as e:
        result.report_error = (result.report_error + "; " if result.report_error else "") + \
            f"HTML: {type(e).__name__}: {e}".splitlines()[0]
        write_json(staging / STUDY_JSON, _summary(result))


def _draw_in_background(source):
    """:func:`~dino_rnn.report.site.index_figures` of ``source`` (~2 s), then its explore page (0.1 s
    with torch loaded, which :func:`_a_core_is_free` has begun to import),
    made in a thread of this process while its main thread waits for the comparison notebook; their
    futures. None where matplotlib draws on a screen here (a GUI needs the main thread):
    build_site makes both then."""
    import matplotlib

    from dino_rnn.report.explore import explore_page

    if matplotlib.get_backend().lower() != "agg":
        return None
    drawing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dino-rnn-figures")
    try:
        return drawing.submit(index_figures, source), drawing.submit(explore_page, source, GENERATOR)
    finally:
        drawing.shutdown(wait=False)


def longest_first(jobs: list[Job], cost: dict[str, float]) -> list[int]:
    """Job indices, the notebooks that took longest last time first (stable otherwise).

    A notebook the previous run did not have (new, or renamed) may be long: it goes first.
    """
    return sorted(range(len(jobs)), key=lambda i: -cost.get(jobs[i].notebook, float("inf")) if cost else 0.0)


def _summary(result: StudyResult) -> dict:
    return {
        "parameters": result.parameters,
        "started": result.started,
        "finished": result.finished,
        "seconds": round(result.seconds, 1),
        "versions": versions(),
        "ok": result.ok,
        "report_error": result.report_error,
        "diverged": result.diverged,
        "reference": result.reference,
        "jobs": [
            {k: v for k, v in asdict(j).items() if k in ("notebook", "seed", "status", "message", "seconds")}
            for j in result.jobs
        ],
    }


def previous_seconds(results_dir) -> dict[str, float]:
    """Each notebook's longest time in the run that last wrote ``results_dir`` (none: {})."""
    f = Path(results_dir) / STUDY_JSON
    try:
        jobs = json.loads(f.read_text(encoding="utf-8"))["jobs"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out: dict[str, float] = {}
    for j in jobs:
        if isinstance(j, dict) and isinstance(j.get("seconds"), (int, float)):
            out[j["notebook"]] = max(out.get(j["notebook"], 0.0), float(j["seconds"]))
    return out


def print_summary(result: StudyResult, stream=None) -> None:
    out = Path(result.out)
    w = (stream or sys.stdout).write
    w(f"\nstudy finished in {result.seconds:.0f} s: {len(result.jobs) - len(result.failed)} of {len(result.jobs)} notebooks ok\n")
    for j in result.failed:
        w(f"  {j.status}: {j.notebook} seed {j.seed}: {j.message}\n    executed notebook: {out / Path(j.output).relative_to(Path(j.output).parents[2])}\n")
    for d in result.diverged:
        w(f"  diverged: {d}\n")
    if result.report_error:
        w(f"  report: {result.report_error}\n")
    for note in result.notes:
        w(f"  note: {note}\n")
    if result.reference:
        w(f"  against the committed reference: {result.reference}\n")
    w(f"  report:  {out / HTML / INDEX}\n  table:   {out / 'comparison.md'}\n")

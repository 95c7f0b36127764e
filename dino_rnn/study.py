"""The study runner behind ``dino-rnn study``: every notebook through papermill, then the report.

For each seed, every model notebook (``notebooks/NN_*.ipynb``) runs once with the same
parameters, in parallel worker processes (``jobs``). Executed notebooks are kept and
exported to HTML; the comparison table and plots are written from the metrics the
notebooks wrote; ``comparison.ipynb`` runs last and becomes the report people open first.

A run writes into its own staging folder inside ``out`` and moves its results into place
only when it has finished, so the previous complete results stay readable throughout,
and an interrupted run leaves them as they were. One failing notebook does not stop
the others: it is kept with its traceback, the summary names it, the exit status is 1.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from . import params as P
from .data import read_names, split_names
from .files import write_json, write_text

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
COMPARISON = "comparison.ipynb"
STUDY_JSON = "study.json"
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
    html: str
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

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.diverged and not self.report_error


def declared_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def export_html(notebook: Path, dest: Path) -> None:
    """The executed notebook as a self-contained HTML page (images inline)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    write_text(dest, body)


def _execute(job: Job, cwd: str) -> Job:
    """Run one notebook (in a worker process); never raises: the job records what happened."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(Path(cwd) / job.notebook),
            job.output,
            parameters=job.parameters,
            cwd=cwd,
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
        job.status = "ok"
    except PapermillExecutionError as e:
        job.status, job.message = "failed", f"{e.ename}: {e.evalue}".strip()
    except Exception as e:  # kernel died, notebook unreadable, ...
        job.status, job.message = "failed", f"{type(e).__name__}: {e}".splitlines()[0]
    job.seconds = time.perf_counter() - t0
    if Path(job.output).exists():
        try:
            export_html(Path(job.output), Path(job.html))
        except Exception as e:  # the notebook result stands; the report is secondary
            job.message = (job.message + f"; HTML export failed: {e}").lstrip("; ")
    return job


def diverged_runs(results_dir) -> list[str]:
    """Runs whose metrics say the loss became NaN or infinite."""
    out = []
    for f in sorted((Path(results_dir) / "metrics").glob("*.json")):
        m = json.loads(f.read_text(encoding="utf-8"))
        if m.get("status") != "ok":
            out.append(f"{m['label']} seed {m['parameters']['seed']}: {m['status']}: {m['message']}")
    return out


def remove_stale(out: Path) -> None:
    """Remove the staging folders of earlier runs that were killed (their process is gone)."""
    for d in [*out.glob(".staging-*"), *out.glob(".previous-.staging-*")]:
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def promote(staging: Path, out: Path) -> None:
    """Move a finished run's files from ``staging`` into ``out``.

    Folders (metrics/, plots/, ...) are swapped whole, so results of an earlier run with
    other seeds do not linger; files are replaced one by one, atomically. Files in ``out``
    that this run does not produce (e.g. benchmark.md) are left alone.
    """
    previous = out / f".previous-{staging.name}"
    previous.mkdir()
    for entry in sorted(staging.iterdir()):
        target = out / entry.name
        if entry.is_dir():
            if target.exists():
                os.replace(target, previous / entry.name)
            os.replace(entry, target)
        else:
            os.replace(entry, target)
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def check_inputs(out, epochs, seeds, max_names, data, jobs):
    """Every check that can fail, before any notebook starts. Returns the checked values."""
    epochs = P.positive_int("--epochs", epochs)
    seeds = P.parse_seeds(seeds)
    max_names = P.positive_int("--max-names", max_names, allow_none=True)
    jobs = P.positive_int("--jobs", jobs if jobs is not None else (os.cpu_count() or 1))
    out = P.output_dir(out, "--out")
    names, report = read_names(data)  # downloads Dino Names on first use; refuses bad files
    split_names(names, 0)  # refuses too few names
    if not model_notebooks():
        raise P.ParameterError(f"no notebooks found in {NOTEBOOK_DIR}; run dino-rnn from a clone of the project")
    return out, epochs, seeds, max_names, data, jobs, report


def run_study(
    out="results",
    *,
    epochs: int = 40,
    seeds=(0,),
    max_names: int | None = None,
    data=None,
    jobs: int | None = None,
    extra: dict | None = None,
    log=print,
) -> StudyResult:
    """Run every notebook for every seed, then write the comparison. See the module docstring."""
    from .report import write_comparison

    out, epochs, seeds, max_names, data, jobs, report = check_inputs(out, epochs, seeds, max_names, data, jobs)
    log(f"data: {report}")
    data_arg = str(Path(data).resolve()) if data is not None else None
    remove_stale(out)
    staging = out / f".staging-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    staging.mkdir()
    result = StudyResult(out=str(out))
    t0 = time.perf_counter()
    try:
        notebooks = {nb: declared_parameters(nb) for nb in model_notebooks()}
        for seed in seeds:
            for nb, declared in notebooks.items():
                base = {
                    "EPOCHS": epochs,
                    "SEED": seed,
                    "MAX_NAMES": max_names,
                    "RESULTS_DIR": str(staging.resolve()),
                    "DATA": data_arg,
                    **(extra or {}),
                }
                result.jobs.append(
                    Job(
                        notebook=nb.name,
                        seed=seed,
                        parameters={k: v for k, v in base.items() if k in declared},
                        output=str(staging / "executed" / f"seed{seed}" / nb.name),
                        html=str(staging / "html" / f"seed{seed}" / nb.with_suffix(".html").name),
                    )
                )
        for j in result.jobs:
            Path(j.output).parent.mkdir(parents=True, exist_ok=True)
        # Longest first (as long as the previous run took), so no long notebook starts last.
        cost = previous_seconds(out)
        order = sorted(range(len(result.jobs)), key=lambda i: -cost.get(result.jobs[i].notebook, 0.0))
        log(f"running {len(result.jobs)} notebooks ({len(seeds)} seed(s)) on {jobs} worker(s) into {out}")
        # Workers inherit one intra-op thread each: the per-name work is too small to share.
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))
            try:
                futures = {pool.submit(_execute, result.jobs[i], str(NOTEBOOK_DIR)): i for i in order}
                bar = tqdm(total=len(futures), desc="study", unit="notebook", mininterval=1.0)
                for fut in as_completed(futures):
                    i = futures[fut]
                    job = result.jobs[i] = fut.result()
                    bar.update()
                    mark = {"ok": "ok"}.get(job.status, job.status.upper())
                    bar.write(f"  {mark:8} {job.notebook} seed {job.seed} ({job.seconds:.0f} s){': ' + job.message if job.message else ''}")
                bar.close()
                pool.shutdown()
            except BaseException:
                # Interrupted or killed: stop the workers now rather than wait for their notebooks
                # (their kernels notice their parent is gone and exit).
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        result.seconds = time.perf_counter() - t0
        result.diverged = diverged_runs(staging)
        write_json(staging / STUDY_JSON, _summary(result, epochs, seeds, max_names, data_arg, jobs))
        try:
            write_comparison(staging)
            comp = Job(COMPARISON, -1, {"RESULTS_DIR": str(staging.resolve())},
                       str(staging / "executed" / COMPARISON), str(staging / "html" / "comparison.html"))
            comp = _execute(comp, str(NOTEBOOK_DIR))
            if comp.status != "ok":
                result.report_error = f"{COMPARISON}: {comp.message}"
        except Exception as e:
            result.report_error = f"comparison: {type(e).__name__}: {e}".splitlines()[0]
        result.seconds = time.perf_counter() - t0
        write_json(staging / STUDY_JSON, _summary(result, epochs, seeds, max_names, data_arg, jobs))
        promote(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _summary(result: StudyResult, epochs, seeds, max_names, data, jobs) -> dict:
    return {
        "parameters": {"epochs": epochs, "seeds": seeds, "max_names": max_names, "data": data, "jobs": jobs},
        "seconds": round(result.seconds, 1),
        "ok": result.ok,
        "report_error": result.report_error,
        "diverged": result.diverged,
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


def failures(results_dir) -> dict[str, str]:
    """Failed or diverged notebooks of the run that wrote ``results_dir`` (from study.json)."""
    f = Path(results_dir) / STUDY_JSON
    if not f.exists():
        return {}
    s = json.loads(f.read_text(encoding="utf-8"))
    return {f"{j['notebook']} seed {j['seed']}": j["message"] for j in s["jobs"] if j["status"] == "failed"}


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
    w(f"  table:   {out / 'comparison.md'}\n  report:  {out / 'html' / 'comparison.html'}\n")

"""The study on a Dask cluster started by hand: a scheduler and two workers as separate processes
on 127.0.0.1, each in its own empty folder (no filesystem shared with the study but /tmp's
test files that only the test's own notebooks touch), reached with ``--scheduler``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from dino_rnn.runner import study as S
from dino_rnn.cli import main

from test_study import RUN, beside, notebook, notebook_dir, run_cli  # noqa: F401  (notebook_dir: a fixture)

BIN = Path(sys.executable).parent


def _start(argv, cwd, env):
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _stop(proc):
    """The process and everything it started (its own session: the nanny, its worker, their kernels)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker --nthreads 1``, each started in its own empty folder;
    the workers without $DINO_RNN_DATA (they get the names in their tasks), their temporary files
    in a folder of the test's (a worker killed mid-task leaves its task's folder). Yields the address."""
    env = {k: v for k, v in os.environ.items() if k != "DINO_RNN_DATA"}
    env["TMPDIR"] = str(tmp_path_factory.mktemp("tmp"))
    procs = []
    try:
        sched_dir = tmp_path_factory.mktemp("scheduler")
        info = sched_dir / "scheduler.json"
        procs.append(_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                             "--scheduler-file", str(info)], sched_dir, env))
        deadline = time.time() + 60
        while not info.exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        address = json.loads(info.read_text())["address"]
        for n in range(2):
            wdir = tmp_path_factory.mktemp(f"worker{n}")
            procs.append(_start([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard",
                                 "--name", f"w{n}"], wdir, env))
        from distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in procs:
            _stop(p)


def losses(out: Path) -> dict:
    """Every number a smoke study trained to, by file: metrics and the aⁿbⁿ lab, timings left out."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if "seconds" not in k and k not in ("finished", "versions")}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    files = sorted(out.glob("metrics/*.json")) + sorted(out.glob("anbn/*.json"))
    return {f.relative_to(out).as_posix(): strip(json.loads(f.read_text())) for f in files}


@pytest.mark.slow
def test_a_smoke_study_on_the_cluster_gives_the_local_runs_numbers(tmp_path, cluster, capfd):
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["study", "--smoke", "--out", str(local), "--jobs", "2"]) == 0
    assert main(["study", "--smoke", "--out", str(remote), "--scheduler", cluster]) == 0
    printed = capfd.readouterr()
    assert f"of the cluster at {cluster}" in printed.out
    assert "dashboard" not in printed.out  # the scheduler serves no dashboard (--no-dashboard)
    assert "Traceback" not in printed.err and "distributed." not in printed.err
    here, there = losses(local), losses(remote)
    assert len(here) == 7 and "anbn/anbn-seed0.json" in here  # six models and the lab
    for name, m in here.items():
        if name.startswith("metrics/"):
            assert len(m["history"]["valid_loss"]) == 1 and m["status"] == "ok"
    assert there == here  # exactly: every loss, every epoch, every sample
    # The results folder is whole and shows no worker's folder.
    executed = sorted(p.relative_to(remote).as_posix() for p in (remote / "executed").rglob("*.ipynb"))
    assert executed == sorted(p.relative_to(local).as_posix() for p in (local / "executed").rglob("*.ipynb"))
    for f in [*remote.rglob("*.ipynb"), *remote.rglob("*.json"), *remote.rglob("*.html")]:
        assert "dino-rnn-task-" not in f.read_text(), f


@pytest.mark.slow
def test_a_worker_killed_mid_task_costs_a_retry_not_the_study(tmp_path, notebook_dir, cluster):
    log = tmp_path / "attempts.txt"
    # The first attempt writes its worker's pid and waits to be killed; the next one finishes.
    nbformat.write(notebook(f"import os, pathlib, time\np = pathlib.Path({str(log)!r})\nfirst = not p.exists()\n"
                            "with p.open('a') as f: f.write(f'{os.getppid()}\\n')\n"
                            "if first: time.sleep(120)"), notebook_dir / "01_victim.ipynb")
    nbformat.write(notebook("print('fine')"), notebook_dir / "02_fine.ipynb")
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(notebook_dir), str(out), "--scheduler", cluster],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (log.exists() and log.read_text().strip()) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        victim = int(log.read_text().split()[0])
        os.kill(victim, signal.SIGKILL)  # the worker process running the notebook (its nanny starts a new one)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr  # the notebooks ran; no metrics, so no comparison: exit 1
    jobs = {j["notebook"]: j for j in json.loads((out / "study.json").read_text())["jobs"]}
    assert jobs["01_victim.ipynb"]["status"] == "ok" and jobs["02_fine.ipynb"]["status"] == "ok"
    attempts = log.read_text().split()
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # started again, on a live worker
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_a_notebook_failing_on_the_cluster_is_reported_and_not_retried(tmp_path, notebook_dir, cluster, capsys):
    log = tmp_path / "runs.txt"
    nbformat.write(notebook(f"open({str(log)!r}, 'a').write('ran\\n')\nraise RuntimeError('boom: broken on purpose')"),
                   notebook_dir / "01_broken.ipynb")
    nbformat.write(notebook("print('fine')"), notebook_dir / "02_fine.ipynb")
    out = tmp_path / "results"
    assert main(["study", "--epochs", "1", "--out", str(out), "--scheduler", cluster]) == 1
    printed = capsys.readouterr().out
    assert "failed: 01_broken.ipynb seed 0: RuntimeError: boom: broken on purpose" in printed
    jobs = {j["notebook"]: j for j in json.loads((out / "study.json").read_text())["jobs"]}
    assert jobs["01_broken.ipynb"]["status"] == "failed" and jobs["02_fine.ipynb"]["status"] == "ok"
    assert "RuntimeError" in (out / "executed" / "seed0" / "01_broken.ipynb").read_text()
    assert log.read_text() == "ran\n"  # once: a notebook's own failure is not retried


@pytest.mark.slow
def test_a_bad_parameter_fails_its_notebooks_on_the_cluster_and_the_others_finish(tmp_path, notebook_dir, cluster):
    """A parameter only one notebook rejects (through ``extra``): that notebook fails, the other finishes."""
    nbformat.write(notebook("assert WIDTH > 0, f'WIDTH must be positive, got {WIDTH}'",
                            params="EPOCHS = 1\nSEED = 0\nRESULTS_DIR = '.'\nWIDTH = 1\n"), notebook_dir / "01_wide.ipynb")
    nbformat.write(notebook("print('fine')"), notebook_dir / "02_fine.ipynb")
    out = tmp_path / "results"
    result = S.run_study(out, epochs=1, scheduler=cluster, extra={"WIDTH": -3}, quiet=True)
    jobs = {j.notebook: j for j in result.jobs}
    assert jobs["01_wide.ipynb"].status == "failed" and "WIDTH must be positive, got -3" in jobs["01_wide.ipynb"].message
    assert jobs["02_fine.ipynb"].status == "ok"


@pytest.mark.slow
def test_an_unreachable_scheduler_is_refused_in_one_line_before_any_work(tmp_path):
    out = tmp_path / "results"
    t0 = time.time()
    rc, stdout, err = run_cli("study", "--smoke", "--out", str(out), "--scheduler", "tcp://127.0.0.1:9")
    assert time.time() - t0 < 40
    assert rc == 2 and err.count("\n") == 1, err
    assert "--scheduler 'tcp://127.0.0.1:9': no Dask scheduler answered" in err
    assert not out.exists() and not any(p.name.startswith("staging") for p in (tmp_path.iterdir()))
    assert not [b for b in beside(out) if b.startswith("staging")]


def test_jobs_and_scheduler_together_are_refused(tmp_path, capsys):
    assert main(["study", "--out", str(tmp_path / "r"), "--scheduler", "tcp://127.0.0.1:9", "--jobs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--jobs sizes the local cluster" in err


@pytest.mark.parametrize("rel", ["../outside.txt", "/etc/outside.txt", "a/../../outside.txt", ""])
def test_a_task_cannot_write_outside_the_staging_folder(tmp_path, rel):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / S.MARKER).write_text("")
    with pytest.raises(ValueError, match="outside its results folder"):
        S.write_returned(staging, {rel: b"x"})
    assert not (tmp_path / "outside.txt").exists()
    S.write_returned(staging, {"metrics/ok.json": b"{}"})
    assert (staging / "metrics" / "ok.json").read_bytes() == b"{}"


def test_a_task_checks_the_names_files_bytes(tmp_path):
    nb = notebook("print(open(DATA).read())", params="DATA = None\n")
    task = {"notebook": "01_x.ipynb", "seed": 0, "source": nbformat.writes(nb), "parameters": {}, "wants": ["DATA"],
            "data": b"alpha\nbeta\n", "data_sha256": "0" * 64, "data_name": "names.txt", "cell_timeout": 60,
            "output": "executed/seed0/01_x.ipynb",
            "paths": {"staging": str(tmp_path), "data": "/client/names.txt", "notebooks": str(tmp_path)}}
    out = S.notebook_task(task)
    assert out["status"] == "failed" and "sha256 mismatch" in out["message"] and out["files"] == {}
    import hashlib

    task["data_sha256"] = hashlib.sha256(task["data"]).hexdigest()
    out = S.notebook_task(task)
    assert out["status"] == "ok", out["message"]
    text = out["files"]["executed/seed0/01_x.ipynb"].decode()
    assert "alpha" in text and "/client/names.txt" in text and "dino-rnn-task-" not in text

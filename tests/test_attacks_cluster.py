"""Attacks on the cluster side of ``dino-rnn study`` and ``dino-rnn sweep``, with real processes and
files: a ``--scheduler`` where something that is not Dask listens, one that is not an address,
``--jobs`` far beyond the machine, Ctrl-C to the whole process group, and SIGKILLs that must leave
no temporary file behind. Each refusal is one line on stderr with the right exit status."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dino_rnn.runner import executor as E
from dino_rnn.cli import main
from dino_rnn.settings import ParameterError

from test_study import beside, previous_results, snapshot

DINO = [sys.executable, "-m", "dino_rnn"]
SWEEP = ["sweep", "--arch", "rnn", "--seeds", "0", "1", "--epochs", "1", "--max-names", "40"]
# A sweep whose points train long enough (~4 s each) to be killed mid-point.
LONG_SWEEP = ["sweep", "--arch", "rnn", "--seeds", "0", "1", "--epochs", "60", "--max-names", "1000"]


def run_cli(*argv, env=None, timeout=300):
    """``dino-rnn ARGV`` in a child process: (exit status, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    p = subprocess.run([*DINO, *argv], capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


@pytest.fixture
def listener():
    """A TCP port where something that is not Dask listens: ``listener("silent")`` accepts and never
    speaks; ``listener("http")`` answers every connection with an HTTP error. Returns the address."""
    sockets = []

    def start(kind: str) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        sockets.append(server)

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                sockets.append(conn)
                if kind == "http":
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nbad request" * 50)

        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{server.getsockname()[1]}"

    yield start
    for s in sockets:
        s.close()


@pytest.mark.slow
@pytest.mark.parametrize("command, kind", [("study", "silent"), ("study", "http"), ("sweep", "http")])
def test_a_port_where_no_dask_listens_is_refused_in_one_line_within_the_timeout(tmp_path, listener, command, kind):
    address = listener(kind)
    out = tmp_path / "results"
    argv = ["study", "--smoke"] if command == "study" else SWEEP
    rc, _, err, seconds = run_cli(*argv, "--out", str(out), "--scheduler", address)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"dino-rnn: error: --scheduler {address!r}: no Dask scheduler answered within 10 s"), err
    assert "start one (dask scheduler) or check the address" in err
    assert seconds < E.CONNECT_TIMEOUT + 15  # the timeout, and the start-up of Python and the package
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(("staging-", "tmp-"))]


@pytest.mark.parametrize("address, message", [
    ("garbage", "missing port number"),
    ("tcp://", "missing port number"),
    ("foo://127.0.0.1:8786", "unknown address scheme 'foo'"),
    ("tcp://127.0.0.1:99999", "a port 1-65535"),
    ("tcp://127.0.0.1:0", "a port 1-65535"),
    ("inproc://x", "is not a Dask scheduler's address"),
    ("tls://127.0.0.1:8786", "needs this client's TLS certificates"),
    ("   ", "--scheduler needs an address"),
])
@pytest.mark.parametrize("command", ["study", "sweep"])
def test_a_scheduler_that_is_not_an_address_is_refused_at_once(tmp_path, capsys, address, message, command):
    out = tmp_path / "results"
    argv = ["study", "--smoke"] if command == "study" else SWEEP
    assert main([*argv, "--out", str(out), "--scheduler", address]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dino-rnn: error: --scheduler") and err.count("\n") == 1 and message in err, err
    assert not out.exists() and beside(out) == []  # refused before any work: not even a lock was taken


def test_garbage_as_scheduler_exits_2_in_one_line_from_the_command_line(tmp_path):
    rc, _, err, seconds = run_cli("study", "--smoke", "--out", str(tmp_path / "results"), "--scheduler", "garbage")
    assert rc == 2 and err == ("dino-rnn: error: --scheduler 'garbage' is not a Dask scheduler's address (missing port "
                               "number in address 'garbage'); give one like tcp://HOST:8786\n")
    assert seconds < 10  # was: the line, 20 s of waiting, and a traceback


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "127.0.0.1:8786", " tcp://sched.example:8786 ",
                                     "tcp://[::1]:8786"])
def test_a_schedulers_address_reads_as_typed(address):
    assert E.check_scheduler(address) == address.strip()


@pytest.mark.parametrize("command", ["study", "sweep"])
def test_ten_thousand_jobs_are_refused_before_any_work(tmp_path, command):
    out = tmp_path / "results"
    before = previous_results(out) if command == "study" else {}
    argv = ["study", "--smoke"] if command == "study" else SWEEP
    rc, _, err, seconds = run_cli(*argv, "--out", str(out), "--jobs", "10000")
    limit = E.MAX_JOBS_PER_CORE * (os.cpu_count() or 1)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"dino-rnn: error: --jobs 10000 asks for more workers than the {limit} a local cluster may")
    assert f"give --jobs {limit} or fewer, or set DINO_RNN_MAX_JOBS=N to allow more" in err
    assert snapshot(out) == before and beside(out) == []  # not even a lock was taken


def test_the_jobs_limit_is_four_per_core_and_dino_rnn_max_jobs_moves_it(monkeypatch):
    monkeypatch.delenv("DINO_RNN_MAX_JOBS", raising=False)
    cores = os.cpu_count() or 1
    assert E.max_jobs() == 4 * cores and E.check_jobs(None) == cores and E.check_jobs(4 * cores) == 4 * cores
    with pytest.raises(ParameterError, match="set DINO_RNN_MAX_JOBS=N to allow more"):
        E.check_jobs(4 * cores + 1)
    monkeypatch.setenv("DINO_RNN_MAX_JOBS", "10000")
    assert E.check_jobs(10000) == 10000  # raised: honoured (no cluster started here)
    with pytest.raises(ParameterError, match=r"the 10000 a local cluster may start \(DINO_RNN_MAX_JOBS"):
        E.check_jobs(10001)
    monkeypatch.setenv("DINO_RNN_MAX_JOBS", "1")
    assert E.check_jobs(None) == 1  # lowered below the cores: the default follows
    with pytest.raises(ParameterError):
        E.check_jobs(2)
    for bad in ("0", "-3", "many", "1e3", "9" * 40):
        monkeypatch.setenv("DINO_RNN_MAX_JOBS", bad)
        with pytest.raises(ParameterError, match="DINO_RNN_MAX_JOBS must be a whole number of at least 1"):
            E.max_jobs()
    monkeypatch.setenv("DINO_RNN_MAX_JOBS", "1")
    with pytest.raises(ParameterError, match="--jobs 3 asks for more workers"):
        E.Executor(workers=3).__enter__()  # refused before any process starts


# ---------------------------------------------------------------------------
# Ctrl-C and SIGKILL of real runs: their temporary files, and their processes
# ---------------------------------------------------------------------------


def _child_env(tmp_path) -> tuple[dict, Path]:
    """The environment of a run whose temporary files must all land in its own folder: TMPDIR and
    JUPYTER_RUNTIME_DIR pointed at ``tmp_path`` folders (TMPDIR's returned, empty)."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    return env, tmp


def _as_from_a_terminal() -> None:
    """Ctrl-C's default action in the child, even when this test runs under something that ignores SIGINT
    (a shell's background job, some CI runners): an ignored SIGINT is inherited, and a run must respect it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(argv, env) -> subprocess.Popen:
    return subprocess.Popen([*DINO, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_as_from_a_terminal)


def _wait_for(what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {getattr(what, '__name__', what)}")


def _ours(proc: subprocess.Popen, marker: str) -> list[str]:
    """The run's processes still alive: its session, and any process (a kernel, in a session of
    its own) whose command line names ``marker`` (a path below the test's folder)."""
    alive = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[0] != "Z" and (int(stat[3]) == proc.pid or marker in cmd):
            alive.append(cmd[:120])
    return alive


def _gone(proc, marker, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while _ours(proc, marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ours(proc, marker)


def _kill_all(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _running_tasks(out: Path):
    """Tasks running in the run's temporary folder (a notebook's or a sweep point's folder)."""
    work = out.parent / f".{out.name}.dino-rnn"
    return list(work.glob("tmp-*/dino-rnn-task-*")) + list(work.glob("tmp-*/dino-rnn-point-*"))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["study", "sweep"])
def test_ctrl_c_to_the_process_group_of_a_running_run_prints_one_line(tmp_path, command):
    out = tmp_path / "results"
    before = previous_results(out) if command == "study" else {}
    env, tmp = _child_env(tmp_path)
    argv = ["study", "--smoke"] if command == "study" else LONG_SWEEP
    proc = _start([*argv, "--out", str(out), "--jobs", "2"], env)
    try:
        _wait_for(lambda: _running_tasks(out) or list(tmp.glob("dino-rnn-*")))
        time.sleep(1.0)  # the notebooks' kernels, or the points' training, at work
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of the group
        _, err = proc.communicate(timeout=120)
        _gone(proc, str(tmp_path))
    finally:
        _kill_all(proc)
    assert proc.returncode == 130, err
    kept = (f"the previous results in {out} are untouched" if command == "study"
            else f"the points finished in {out} are kept, run again to resume")
    assert err.splitlines() == [f"dino-rnn: interrupted; {kept}"], err  # was: 33-70 lines of the workers' tracebacks
    if command == "study":
        assert snapshot(out) == before
    assert not [b for b in beside(out) if b.startswith(("staging-", "tmp-", "incoming-"))]
    assert sorted(os.listdir(tmp)) == []


def _killed(argv, env, out, tmp_path, when) -> bool:
    """``dino-rnn ARGV`` SIGKILLed (its main process only) once ``when(out)`` holds, and its workers and
    kernels gone with it; False if it had finished by then."""
    proc = _start(argv, env)
    try:
        _wait_for(lambda: when(out) or proc.poll() is not None)
        killed = proc.poll() is None
        proc.kill()
        proc.wait(timeout=30)
        _gone(proc, str(tmp_path))
    finally:
        _kill_all(proc)
    return killed


def _workers_up(out: Path):
    """The local cluster's workers, once they have their scratch folders."""
    return list((out.parent / f".{out.name}.dino-rnn").glob("tmp-*/dask-scratch-space/worker-*"))


def _notebooks_back(out: Path):
    """Every model notebook returned: the comparison notebook and the report are next, in the main process."""
    from dino_rnn.runner.study import model_notebooks

    done = list((out.parent / f".{out.name}.dino-rnn").glob("staging-*/executed/seed0/*.ipynb"))
    return len(done) >= len(model_notebooks())


@pytest.mark.slow
@pytest.mark.parametrize("command", ["study", "sweep"])
def test_killed_runs_leave_no_temporary_files_and_the_next_run_cleans_theirs(tmp_path, command):
    out = tmp_path / "results"
    env, tmp = _child_env(tmp_path)
    argv = ["study", "--smoke", "--jobs", "2"] if command == "study" else [*LONG_SWEEP, "--jobs", "2"]
    argv += ["--out", str(out)]
    moments = (_workers_up, _running_tasks, _notebooks_back) if command == "study" else (_workers_up, _running_tasks)
    for when in moments:
        killed = _killed(argv, env, out, tmp_path, when)
        assert killed or when is _notebooks_back  # (the report after them may be over in a second)
        assert sorted(os.listdir(tmp)) == [], when.__name__  # was: dask-scratch-space, dino-rnn-task-*, tmp*.json
        assert not (tmp_path / "runtime").exists() or not os.listdir(tmp_path / "runtime")
        if killed:  # the killed run's temporary folder is in the results' work folder
            assert [b for b in beside(out) if b.startswith("tmp-")], when.__name__
    proc = _start(argv, env)
    try:
        _, err = proc.communicate(timeout=300)
        _gone(proc, str(tmp_path))
    finally:
        _kill_all(proc)
    assert proc.returncode == 0, err
    assert sorted(os.listdir(tmp)) == []
    assert not [b for b in beside(out) if b.startswith(("tmp-", "staging-", "incoming-"))]


def test_a_local_clusters_workers_ignore_sigint_and_keep_their_temporary_files_in_tmpdir(tmp_path):
    """Even a worker its nanny starts again after a death. And they run without Dask's profiler
    (a sampling thread per worker that cost a one-seed study ~8% of its CPU)."""
    import tempfile

    def worker_state(dask_worker):
        import signal as sig
        import tempfile as tf

        return (sig.getsignal(sig.SIGINT) == sig.SIG_IGN, tf.gettempdir(), os.environ.get("JUPYTER_RUNTIME_DIR"),
                "profile" in dask_worker.periodic_callbacks)

    with E.Executor(workers=1, tmpdir=tmp_path) as ex:
        (first,) = ex.client.run(worker_state).values()
        assert first == (True, str(tmp_path), str(tmp_path), False)
        assert tempfile.gettempdir() != str(tmp_path)  # this process's are its own business
        assert (tmp_path / "dask-scratch-space").is_dir()
        (pid,) = ex.client.run(os.getpid).values()
        os.kill(pid, signal.SIGKILL)

        def restarted():
            try:
                return list(ex.client.run(os.getpid).values()) not in ([], [pid])
            except Exception:  # no worker yet
                return False

        _wait_for(restarted, 60)
        (again,) = ex.client.run(worker_state).values()
        assert again == (True, str(tmp_path), str(tmp_path), False)


@pytest.mark.slow
def test_a_temporary_folder_still_written_in_is_removed_once_its_writer_stops(tmp_path):
    """As a notebook's kernel that outlives its worker for a moment, writing into the run's folder."""
    from dino_rnn.runner import folders as R

    folder = R.ResultsFolder(tmp_path / "results")
    tmp = folder.new_marked("tmp")
    task = tmp / "dino-rnn-task-x"
    task.mkdir()
    stop = time.monotonic() + 2.0

    def write() -> None:
        i = 0
        while time.monotonic() < stop:
            try:
                (task / f"metrics-{i}.json").write_bytes(b"{}")
            except OSError:  # its folder is gone
                pass
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    with E.removed_after(folder, tmp):
        time.sleep(0.2)
    writer.join()
    assert not tmp.exists() and sorted(p.name for p in folder.work.iterdir()) == []

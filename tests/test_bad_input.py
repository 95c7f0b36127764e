"""Hostile input is refused before any work, with one line: names files that are not regular
files or are absurdly large, seed lists that would start an absurd number of runs, and
downloads that fail in every way a network can fail (tested against real local servers)."""

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dino_rnn import data as D
from dino_rnn import settings as P
from dino_rnn.cli import main
from dino_rnn.data import DataError
from dino_rnn.settings import ParameterError


def one_line(e) -> str:
    msg = str(e.value if hasattr(e, "value") else e)
    assert "\n" not in msg and msg.strip() == msg, msg
    return msg


def nothing_written(out: Path) -> bool:
    """The out folder may be created by the output check, but no file may appear in it."""
    return not out.exists() or not [p for p in out.rglob("*") if not p.is_dir()]


# -- names files that are not regular files, or too large ------------------------------


def guard_fifo(path):
    """If anything blocks opening the named pipe ``path`` for reading (the bug), a writer thread
    unblocks it and feeds it ten names (too few for a study, so nothing gets trained), so the
    test fails instead of hanging. Returns the event that stops the guard."""
    done = threading.Event()

    def unblock():
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads
            except OSError:
                time.sleep(0.05)
                continue
            os.set_blocking(fd, True)
            with os.fdopen(fd, "wb") as w:
                w.write(b"\n".join(b"name%d" % i for i in range(10)) + b"\n")
            return

    threading.Thread(target=unblock, daemon=True).start()
    return done


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "names.fifo"
    os.mkfifo(path)
    done = guard_fifo(path)
    yield path
    done.set()


def test_fifo_is_refused_without_opening_it(fifo):
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        D.read_names(fifo)
    assert one_line(e) == (
        f"names file {fifo} is a named pipe (FIFO), not a regular file; "
        "pass a regular text file with one name per line"
    )
    assert time.monotonic() - t0 < 1


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_character_device_is_refused():
    with pytest.raises(DataError) as e:
        D.read_names("/dev/null")
    assert one_line(e) == (
        "names file /dev/null is a character device, not a regular file; "
        "pass a regular text file with one name per line"
    )


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_socket_is_refused(tmp_path):
    path = tmp_path / "names.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(DataError) as e:
            D.read_names(path)
    assert one_line(e) == (
        f"names file {path} is a socket, not a regular file; pass a regular text file with one name per line"
    )


def test_file_larger_than_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    assert D.MAX_NAMES_BYTES == 50_000_000
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(D.MAX_NAMES_BYTES + 1)  # sparse: no disk used, and never read
    read = []
    real_open = D.os.open
    monkeypatch.setattr(D.os, "open", lambda p, *a, **k: read.append(p) or real_open(p, *a, **k))
    with pytest.raises(DataError) as e:
        D.read_names(big)
    assert one_line(e) == (
        f"names file {big} is larger than 50 MB, more than any names list; "
        "pass a regular text file with one name per line"
    )
    assert read == []


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_the_read_is_bounded_even_when_stat_says_zero_bytes(monkeypatch):
    """/proc files are regular, stat says 0 bytes, yet they have content: as a file that grows
    after the size check would. The read stops at the limit + 1 byte."""
    monkeypatch.setattr(D, "MAX_NAMES_BYTES", 100, raising=False)
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(DataError) as e:
        D.read_names("/proc/self/status")
    assert one_line(e) == (
        "names file /proc/self/status is larger than 100 bytes, more than any names list; "
        "pass a regular text file with one name per line"
    )


def test_a_file_at_the_limit_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "MAX_NAMES_BYTES", 100, raising=False)
    p = tmp_path / "names.txt"
    p.write_bytes((b"abcdefghi\n" * 10)[:100])
    assert D.load_names(p) == ["abcdefghi"] * 10


@pytest.mark.skipif(not (os.path.exists("/dev/zero") and os.path.exists("/proc/self/status")), reason="Linux")
def test_dev_zero_via_cli_exits_2_without_reading_it(tmp_path):
    """In a child process with 1 GB of address space to spare: reading /dev/zero (the bug)
    fails there with a MemoryError instead of taking this machine's memory."""
    out = tmp_path / "results"
    code = (
        "import resource, sys\n"
        "import dino_rnn.runner.study\n"
        "from dino_rnn.cli import main\n"
        "vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, vm + 2**30))\n"
        "sys.exit(main(['study', '--out', sys.argv[1], '--data', '/dev/zero']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == (
        "dino-rnn: error: names file /dev/zero is a character device, not a regular file; "
        "pass a regular text file with one name per line\n"
    )
    assert nothing_written(out)


def test_fifo_via_cli_exits_2(tmp_path, fifo, capsys, monkeypatch):
    from dino_rnn.runner import study as S

    monkeypatch.setattr(S, "NOTEBOOK_DIR", tmp_path / "no-notebooks")  # nothing to run, if it got that far
    out = tmp_path / "results"
    assert main(["study", "--out", str(out), "--data", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dino-rnn: error: ") and err.count("\n") == 1 and "is a named pipe (FIFO)" in err
    assert nothing_written(out)


# -- seed lists ---------------------------------------------------------------------------


def test_a_million_seeds_are_refused(monkeypatch):
    monkeypatch.delenv("DINO_RNN_MAX_SEEDS", raising=False)
    with pytest.raises(ParameterError) as e:
        P.parse_seeds(["0-1000000"])
    assert one_line(e) == (
        "--seeds 0-1000000 asks for 1000001 seeds; a study runs at most 100 "
        "(set DINO_RNN_MAX_SEEDS=N to allow more)"
    )


def test_a_huge_range_is_refused_without_building_it(monkeypatch):
    import tracemalloc

    monkeypatch.delenv("DINO_RNN_MAX_SEEDS", raising=False)
    tracemalloc.start()
    try:
        with pytest.raises(ParameterError) as e:
            P.parse_seeds(f"0-{10**15}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert one_line(e).startswith(f"--seeds 0-{10**15} asks for {10**15 + 1} seeds; a study runs at most 100")
    assert peak < 1 << 20


@pytest.mark.parametrize(
    "seeds, n",
    [
        ("0-100", 101),
        ("0-59 60-100", 101),
        ("0-99 500", 101),
        (list(range(101)), 101),
        (" ".join(map(str, range(150))), 150),
    ],
)
def test_the_limit_counts_every_seed(monkeypatch, seeds, n):
    monkeypatch.delenv("DINO_RNN_MAX_SEEDS", raising=False)
    with pytest.raises(ParameterError) as e:
        P.parse_seeds(seeds)
    msg = one_line(e)
    assert f" asks for {n} seeds; a study runs at most 100 (set DINO_RNN_MAX_SEEDS=N to allow more)" in msg
    assert len(msg) < 200  # a long list is shortened, not printed whole


def test_one_hundred_seeds_are_fine_and_the_limit_can_be_raised(monkeypatch):
    monkeypatch.delenv("DINO_RNN_MAX_SEEDS", raising=False)
    assert P.MAX_SEEDS == 100
    assert P.parse_seeds("0-99") == list(range(100))
    monkeypatch.setenv("DINO_RNN_MAX_SEEDS", "1000")
    assert P.parse_seeds("0-999") == list(range(1000))
    with pytest.raises(ParameterError, match="asks for 1001 seeds; a study runs at most 1000 "):
        P.parse_seeds("0-1000")
    monkeypatch.setenv("DINO_RNN_MAX_SEEDS", "2")
    with pytest.raises(ParameterError, match="at most 2 "):
        P.parse_seeds("0 1 2")


@pytest.mark.parametrize("value", ["many", "0", "-5", "1.5", "9" * 5000])
def test_a_bad_max_seeds_variable_is_refused(monkeypatch, value):
    monkeypatch.setenv("DINO_RNN_MAX_SEEDS", value)
    with pytest.raises(ParameterError) as e:
        P.parse_seeds("0")
    shown = value if len(value) < 100 else None
    msg = one_line(e)
    assert msg.startswith("DINO_RNN_MAX_SEEDS must be a whole number of at least 1, not ")
    if shown:
        assert msg == f"DINO_RNN_MAX_SEEDS must be a whole number of at least 1, not {value!r}"
    assert len(msg) < 200


@pytest.mark.parametrize("text", [str(2**64), f"0-{2**64}", "9" * 5000, f"0-{'9' * 5000}"])
def test_a_seed_beyond_what_torch_accepts_is_refused(monkeypatch, text):
    monkeypatch.delenv("DINO_RNN_MAX_SEEDS", raising=False)
    with pytest.raises(ParameterError) as e:
        P.parse_seeds(text)
    msg = one_line(e)
    assert "is larger than 18446744073709551615 (2**64-1), the largest seed torch accepts" in msg
    assert len(msg) < 200
    assert P.parse_seeds(str(2**64 - 1)) == [2**64 - 1]
    with pytest.raises(ParameterError, match="the largest seed torch accepts"):
        P.seed(2**64)


def test_a_million_seeds_via_cli_exit_2_before_any_work(tmp_path, capsys, monkeypatch):
    from dino_rnn.runner import study as S

    monkeypatch.delenv("DINO_RNN_MAX_SEEDS", raising=False)
    monkeypatch.setattr(S, "NOTEBOOK_DIR", tmp_path / "no-notebooks")  # nothing to run, if it got that far
    out = tmp_path / "results"
    assert main(["study", "--out", str(out), "--seeds", "0-1000000"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "dino-rnn: error: --seeds 0-1000000 asks for 1000001 seeds; a study runs at most 100 "
        "(set DINO_RNN_MAX_SEEDS=N to allow more)\n"
    )
    assert nothing_written(out)


# -- downloads that fail ------------------------------------------------------------------


class Server:
    """A scripted HTTP server on 127.0.0.1: to each connection it reads the request, sends
    ``response`` (raw bytes), waits ``hold`` seconds and closes. It runs in a daemon thread
    and stops by itself after ``life`` seconds, or at once when the test ends."""

    def __init__(self, response: bytes, hold: float = 0.0, life: float = 30.0):
        self.response, self.hold = response, hold
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/dino_names.txt"
        self.stop = threading.Event()
        self.requests = 0
        self.thread = threading.Thread(target=self._run, args=(time.monotonic() + life,), daemon=True)
        self.thread.start()

    def _run(self, deadline):
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    conn, _ = self.sock.accept()
                except OSError:  # the accept time-out: look at the clock and the stop flag
                    continue
                with conn:
                    try:
                        conn.settimeout(5)
                        request = b""
                        while b"\r\n\r\n" not in request:
                            chunk = conn.recv(4096)
                            if not chunk:
                                break
                            request += chunk
                        self.requests += 1
                        conn.sendall(self.response)
                        self.stop.wait(self.hold)
                    except OSError:
                        pass
        finally:
            self.sock.close()

    def close(self):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def serve():
    servers = []

    def start(response: bytes, hold: float = 0.0) -> str:
        servers.append(Server(response, hold))
        return servers[-1].url

    yield start
    for s in servers:
        s.close()


def http(status: str, body: bytes = b"", headers: str | None = None) -> bytes:
    if headers is None:
        headers = f"Content-Length: {len(body)}\r\n"
    return f"HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n".encode() + body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRUNCATED = http("200 OK", b"a" * 100, headers="Content-Length: 19909\r\n")
CHUNKED_TRUNCATED = http("200 OK", b"64\r\n" + b"a" * 100 + b"\r\n1000\r\nabc", headers="Transfer-Encoding: chunked\r\n")
ADVICE = (
    "; set DINO_RNN_DATA=/path/to/names.txt to use a local file, "
    "or DINO_RNN_DATA_URL to another source (file:// works)"
)


@pytest.fixture
def dest(tmp_path, monkeypatch):
    monkeypatch.delenv("DINO_RNN_DOWNLOAD_TIMEOUT", raising=False)
    return tmp_path / "data" / "dino_names.txt"


def refused(dest, url, reason, **kw):
    """Download ``url`` into ``dest``: a one-line DataError with ``reason``, and nothing left behind."""
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        D.download(url, dest, **kw)
    took = time.monotonic() - t0
    assert one_line(e) == f"cannot download the Dino Names file from {url} ({reason})" + ADVICE
    assert not dest.exists()
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []  # no temp file either
    return took


def test_download_over_http_works(serve, dest, dino_file):
    body = dino_file.read_bytes()
    D.download(serve(http("200 OK", body)), dest)
    assert dest.read_bytes() == body and list(dest.parent.iterdir()) == [dest]


def test_download_cut_short_with_content_length(serve, dest):
    refused(dest, serve(TRUNCATED), "the connection closed after 100 of 19909 bytes")


def test_download_cut_short_chunked(serve, dest):
    refused(dest, serve(CHUNKED_TRUNCATED), "the connection closed after 100 bytes, before the end")


def test_download_server_closes_without_answering(serve, dest):
    refused(dest, serve(b""), "the server closed the connection without answering")


@pytest.mark.parametrize("status", ["404 Not Found", "500 Internal Server Error"])
def test_download_http_error_status(serve, dest, status):
    refused(dest, serve(http(status, b"<html>oops</html>\n")), f"HTTP {status}")


def test_download_connection_refused(dest):
    url = f"http://127.0.0.1:{free_port()}/dino_names.txt"
    refused(dest, url, "connection refused")


def test_download_no_answer_times_out(serve, dest):
    took = refused(dest, serve(b"", hold=10), "no answer within 0.3 s", timeout=0.3)
    assert took < 5


def test_download_stalls_mid_body_times_out(serve, dest):
    took = refused(dest, serve(TRUNCATED, hold=10), "no answer within 0.3 s", timeout=0.3)
    assert took < 5


def test_download_larger_than_any_names_list(serve, dest, monkeypatch):
    monkeypatch.setattr(D, "MAX_NAMES_BYTES", 1000, raising=False)
    refused(dest, serve(http("200 OK", b"a" * 5000)), "more than 1,000 bytes, larger than any names list")
    # no Content-Length: the body is counted as it arrives
    refused(dest, serve(b"HTTP/1.0 200 OK\r\n\r\n" + b"a" * 5000), "more than 1,000 bytes, larger than any names list")


def test_download_timeout_from_the_environment(serve, dest, monkeypatch):
    monkeypatch.setenv("DINO_RNN_DOWNLOAD_TIMEOUT", "0.3")
    took = refused(dest, serve(b"", hold=10), "no answer within 0.3 s")
    assert took < 5


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_a_bad_download_timeout_variable_is_refused(dest, monkeypatch, value):
    monkeypatch.setenv("DINO_RNN_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(ParameterError) as e:
        D.download("http://127.0.0.1:1/x", dest)
    assert one_line(e) == f"DINO_RNN_DOWNLOAD_TIMEOUT must be a number of seconds greater than 0, not {value!r}"
    assert not dest.exists()


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    monkeypatch.delenv("DINO_RNN_DATA", raising=False)
    monkeypatch.delenv("DINO_RNN_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.setattr(D, "DEFAULT_FILE", tmp_path / "data" / "dino_names.txt")
    return D.DEFAULT_FILE


@pytest.mark.parametrize(
    "response, hold, reason",
    [
        (CHUNKED_TRUNCATED, 0.0, "the connection closed after 100 bytes, before the end"),
        (TRUNCATED, 0.0, "the connection closed after 100 of 19909 bytes"),
        (http("404 Not Found"), 0.0, "HTTP 404 Not Found"),
        (b"", 10.0, "no answer within 0.3 s"),
    ],
    ids=["chunked-cut-short", "cut-short", "404", "time-out"],
)
def test_download_failure_via_cli_exits_2_with_one_line(
    tmp_path, capsys, monkeypatch, serve, no_local_data, response, hold, reason
):
    url = serve(response, hold)
    monkeypatch.setenv("DINO_RNN_DATA_URL", url)
    monkeypatch.setenv("DINO_RNN_DOWNLOAD_TIMEOUT", "0.3")
    out = tmp_path / "results"
    t0 = time.monotonic()
    assert main(["study", "--out", str(out)]) == 2
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert err == f"dino-rnn: error: cannot download the Dino Names file from {url} ({reason})" + ADVICE + "\n"
    assert not no_local_data.exists()
    assert not no_local_data.parent.exists() or list(no_local_data.parent.iterdir()) == []
    assert nothing_written(out)


def test_connection_refused_via_cli(tmp_path, capsys, monkeypatch, no_local_data):
    url = f"http://127.0.0.1:{free_port()}/dino_names.txt"
    monkeypatch.setenv("DINO_RNN_DATA_URL", url)
    out = tmp_path / "results"
    assert main(["study", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"dino-rnn: error: cannot download the Dino Names file from {url} (connection refused)" + ADVICE + "\n"
    assert nothing_written(out) and not no_local_data.exists()


def test_a_default_file_that_is_not_a_regular_file_is_refused(no_local_data):
    no_local_data.parent.mkdir()
    os.mkfifo(no_local_data)
    done = guard_fifo(no_local_data)
    try:
        with pytest.raises(DataError) as e:
            D.resolve_data_path()
    finally:
        done.set()
    assert one_line(e) == (
        f"{no_local_data} is a named pipe (FIFO), not a regular file; delete it to download it again"
    )
    assert stat.S_ISFIFO(os.stat(no_local_data).st_mode)  # left alone

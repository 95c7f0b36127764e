"""The results folder a study writes: ownership, the lock, and complete results at every instant.

Promotion is tested step by step: every file-system operation it makes is made to fail in
turn (an exception, as a full disk or a permission error would) and, in a child process,
to kill the process on the spot (os._exit: no handler runs, as with SIGKILL). After each,
the folder must hold the old complete results or the new complete ones, and the next
run's clean-up must leave complete results and every file the user put there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dino_rnn.runner import folders as R

from dino_rnn import files as F
from dino_rnn.settings import ParameterError

OLD = {"comparison.md": b"old table\n", "metrics/a-seed0.json": b"{\"old\": 1}\n", "plots/a.png": b"old png"}
NEW = {"comparison.md": b"new table\n", "metrics/a-seed0.json": b"{\"new\": 1}\n", "metrics/b-seed0.json": b"{}\n",
       "html/seed0/x.html": b"<html>"}
STEPS = ("exchange", "rename", "unlink", "rmdir", "rmtree", "write_json")


def content(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (the manifest aside) and its bytes."""
    return {f: (folder / f).read_bytes() for f in R.files_in(folder) if f != F.MANIFEST}


def complete(folder: Path) -> bool:
    """A folder whose manifest lists exactly the files in it."""
    listed = R.read_manifest(folder)
    return listed is not None and sorted(listed) == sorted(content(folder))


def write(folder: Path, files: dict[str, bytes]) -> None:
    for rel, b in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b)


def earlier_study(out: Path) -> None:
    """``out`` as an earlier study left it: OLD and its manifest."""
    out.mkdir(parents=True)
    write(out, OLD)
    R.write_manifest(out)


def staged(folder: R.ResultsFolder) -> Path:
    s = folder.new_staging()
    write(s, NEW)
    return s


def leftovers(folder: R.ResultsFolder) -> list[str]:
    """What is left beside the results folder, the lock files aside."""
    return sorted(p.name for p in folder.work.iterdir() if p.name not in (R.LOCK, R.LOCK_INFO)) if folder.work.exists() else []


# ---------------------------------------------------------------------------
# Ownership
# ---------------------------------------------------------------------------


def test_first_run_creates_the_folder_with_a_manifest(tmp_path):
    f = R.ResultsFolder(tmp_path / "a" / "out")
    with f.lock():
        f.recover()
        f.check_owned()
        f.promote(staged(f))
    assert content(f.path) == NEW and complete(f.path)
    assert leftovers(f) == []


def test_a_new_run_replaces_exactly_the_old_one(tmp_path):
    out = tmp_path / "out"
    earlier_study(out)
    f = R.ResultsFolder(out)
    f.check_owned()
    f.promote(staged(f))
    assert content(out) == NEW  # plots/a.png was the old run's: gone, not mixed in
    assert complete(out) and leftovers(f) == []


@pytest.mark.parametrize("with_manifest", [False, True])
def test_a_folder_with_files_no_study_wrote_is_refused_untouched(tmp_path, with_manifest):
    out = tmp_path / "home"
    if with_manifest:
        earlier_study(out)
    else:
        out.mkdir()
    write(out, {"notes.txt": b"mine", "html/index.html": b"my site", "plots/holiday.png": b"png"})
    before = content(out)
    with pytest.raises(ParameterError) as e:
        R.ResultsFolder(out).check_owned()
    msg = str(e.value)
    assert "\n" not in msg and "'html/index.html'" in msg and "give a new or empty folder" in msg
    assert "holds files that dino-rnn study did not write" in msg
    assert content(out) == before


def test_an_empty_or_missing_folder_is_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    R.ResultsFolder(tmp_path / "empty").check_owned()
    R.ResultsFolder(tmp_path / "missing").check_owned()


def test_a_file_given_as_the_folder_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"precious")
    with pytest.raises(ParameterError, match="is a file, not a folder"):
        R.ResultsFolder(tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"precious"


def test_a_symlinked_folder_is_replaced_where_it_points(tmp_path):
    real = tmp_path / "real"
    earlier_study(real)
    (tmp_path / "link").symlink_to(real)
    f = R.ResultsFolder(tmp_path / "link")
    f.promote(staged(f))
    assert (tmp_path / "link").is_symlink() and content(real) == NEW


def test_a_manifest_cannot_reach_outside_its_folder(tmp_path):
    out = tmp_path / "out"
    earlier_study(out)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep")
    m = json.loads((out / F.MANIFEST).read_text())
    m["files"] += ["../victim.txt", str(victim)]
    (out / F.MANIFEST).write_text(json.dumps(m))
    f = R.ResultsFolder(out)
    f.promote(staged(f))
    assert victim.read_bytes() == b"keep"


def test_a_file_saved_into_the_folder_during_a_run_is_kept(tmp_path):
    out = tmp_path / "out"
    earlier_study(out)
    f = R.ResultsFolder(out)
    f.check_owned()
    s = staged(f)
    write(out, {"notes.txt": b"written while the study ran", "comparison.md.orig": b"x"})
    f.promote(s)
    assert (out / "notes.txt").read_bytes() == b"written while the study ran"
    assert {k: v for k, v in content(out).items() if k in NEW} == NEW
    assert any("notes.txt" in n for n in f.notes)
    assert leftovers(f) == []


# ---------------------------------------------------------------------------
# Faults at every step of the promotion
# ---------------------------------------------------------------------------


class Faults:
    """Counts the promotion's file-system steps; makes step ``fail_at`` raise ``OSError``."""

    def __init__(self, monkeypatch, fail_at: int | None, atomic: bool):
        self.n, self.fail_at, self.names = 0, fail_at, []
        for name in STEPS:
            real = getattr(R, name)
            if name == "exchange" and not atomic:
                def real(a, b):  # noqa: F811 - a platform without the atomic swap
                    raise NotImplementedError
            monkeypatch.setattr(R, name, self.wrap(name, real))

    def wrap(self, name, real):
        def step(*a, **k):
            self.n += 1
            self.names.append(name)
            if self.n == self.fail_at:
                raise OSError(28, f"injected failure of {name}")
            return real(*a, **k)

        return step


def count_steps(tmp_path, monkeypatch, atomic: bool, user_file: bool) -> int:
    with monkeypatch.context() as m:
        out = tmp_path / "count" / "out"
        earlier_study(out)
        f = R.ResultsFolder(out)
        s = staged(f)
        if user_file:
            write(out, {"mine.txt": b"mine"})
        faults = Faults(m, None, atomic)
        f.promote(s)
        return faults.n


@pytest.mark.parametrize("atomic", [True, False], ids=["exchange", "two-renames"])
@pytest.mark.parametrize("user_file", [False, True], ids=["plain", "user-file-added-during-run"])
def test_a_failure_at_any_step_leaves_complete_results(tmp_path, monkeypatch, atomic, user_file):
    steps = count_steps(tmp_path, monkeypatch, atomic, user_file)
    assert steps >= 4
    for k in range(1, steps + 1):
        out = tmp_path / f"k{k}" / "out"
        earlier_study(out)
        f = R.ResultsFolder(out)
        s = staged(f)
        if user_file:
            write(out, {"mine.txt": b"mine"})
        mine = {"mine.txt": b"mine"} if user_file else {}
        with monkeypatch.context() as m:
            faults = Faults(m, k, atomic)
            try:
                f.promote(s)
            except OSError:
                f.abandon(s)  # what the study does when promotion raises
            step = faults.names[k - 1]
        now = content(out)
        # At this instant: the old results or the new ones, whole.
        assert {x: now[x] for x in now if x != "mine.txt"} in (OLD, NEW), (k, step)
        # The next run cleans up: still whole, the user's file still there, nothing left beside.
        g = R.ResultsFolder(out)
        with g.lock():
            g.recover()
        after = content(out)
        state = {x: after[x] for x in after if x != "mine.txt"}
        assert state in (OLD, NEW), (k, step)
        assert sorted(R.read_manifest(out)) == sorted(state), (k, step)
        assert [q.read_bytes() for q in out.rglob("mine.txt")] == [b"mine"] * len(mine), (k, step)
        assert leftovers(g) == [], (k, step)


CRASH = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from dino_rnn.runner import folders as R
    from dino_rnn import files as F
    out, k, atomic = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    n = 0
    def wrap(name, real):
        def step(*a, **kw):
            global n
            n += 1
            if n == k:
                os._exit(137)  # killed on the spot: no handler, no finally
            return real(*a, **kw)
        return step
    for name in %r:
        real = getattr(R, name)
        if name == "exchange" and not atomic:
            def real(a, b):
                raise NotImplementedError
        setattr(R, name, wrap(name, real))
    f = R.ResultsFolder(out)
    f.promote(Path(sys.argv[4]))
    """ % (STEPS,)
)


@pytest.mark.parametrize("atomic", [True, False], ids=["exchange", "two-renames"])
def test_a_kill_at_any_step_leaves_complete_results(tmp_path, monkeypatch, atomic):
    steps = count_steps(tmp_path, monkeypatch, atomic, user_file=True)
    seen = set()
    for k in range(1, steps + 1):
        out = tmp_path / f"k{k}" / "out"
        earlier_study(out)
        f = R.ResultsFolder(out)
        s = staged(f)
        write(out, {"mine.txt": b"mine"})
        p = subprocess.run([sys.executable, "-c", CRASH, str(out), str(k), "1" if atomic else "0", str(s)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 137, p.stderr
        if out.exists():
            now = content(out)
            state = {x: now[x] for x in now if x != "mine.txt"}
            assert state in (OLD, NEW), k
            seen.add("old" if state == OLD else "new")
        else:
            # Only between the two renames of the fallback: the old results wait beside it.
            assert not atomic, k
            seen.add("missing")
        g = R.ResultsFolder(out)
        with g.lock():
            g.recover()
        after = content(out)
        state = {x: after[x] for x in after if x != "mine.txt"}
        assert state in (OLD, NEW), k
        assert sorted(R.read_manifest(out)) == sorted(state), k
        assert [q.read_bytes() for q in out.rglob("mine.txt")] == [b"mine"], k
        assert leftovers(g) == [], k
    assert {"old", "new"} <= seen


# ---------------------------------------------------------------------------
# One study at a time
# ---------------------------------------------------------------------------

HOLD = textwrap.dedent(
    """
    import sys, time
    from dino_rnn.runner.folders import ResultsFolder
    with ResultsFolder(sys.argv[1]).lock("dino-rnn study --seeds 0-4"):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def test_a_second_study_is_refused_and_a_dead_one_does_not_block(tmp_path):
    import signal

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ParameterError) as e:
            with R.ResultsFolder(out).lock():
                pass
        msg = str(e.value)
        assert "\n" not in msg and "in use by another run" in msg
        assert f"pid {holder.pid}" in msg and "dino-rnn study --seeds 0-4" in msg
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with R.ResultsFolder(out).lock():  # the kernel released the dead process's lock
        pass


def test_a_folder_in_the_work_folder_that_is_not_ours_is_left_alone(tmp_path):
    """Neither marked as a run's own nor a replaced results folder: a file someone put in the
    hidden work folder. Recovery keeps it, says so, and leaves the results as they were."""
    out = tmp_path / "out"
    earlier_study(out)
    f = R.ResultsFolder(out)
    theirs = f.work / "staging-20260101-000000-123"
    write(theirs, {"notes/mine.txt": b"my notes"})
    with f.lock():
        f.recover()
    assert content(out) == OLD and leftovers(f) == [theirs.name]
    assert (theirs / "notes" / "mine.txt").read_bytes() == b"my notes"
    assert any("left" in n and theirs.name in n for n in f.notes)


def test_a_task_never_recreates_a_staging_folder_that_is_gone(tmp_path):
    """A worker's files arriving after its run gave up its staging folder are refused, not written."""
    from dino_rnn.runner.study import write_returned

    f = R.ResultsFolder(tmp_path / "out")
    staging = f.new_staging()
    f.abandon(staging)
    with pytest.raises(FileNotFoundError):
        write_returned(staging, {"metrics/late.json": b"{}"})
    assert not staging.exists()

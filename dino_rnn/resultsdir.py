"""Results folders: where runs write, which files a study owns, and how a run replaces them safely.

Where results live (one place decides it)::

    results/reference/   the committed five-seed run behind the README; only
                         ``dino-rnn study --reference`` writes here
    results/study/       ``dino-rnn study`` (default ``--out``); ignored by git
    results/notebooks/   the notebooks run by hand in Jupyter (their RESULTS_DIR); ignored by git

and, inside any of them, where each file goes (:func:`result_paths`, :func:`anbn_paths`,
:data:`STUDY_JSON`).

A folder a study writes (``--out``) is treated as the user's:

- **Ownership.** A study writes a manifest, ``.dino-rnn.json``, listing every file it put
  in the folder. A later study replaces that folder only if every file in it is listed
  (or it is empty, or does not exist yet); anything else is refused before any work,
  with one line naming a file it did not write. Deletion only ever removes files a
  manifest lists (or a staging folder the study created itself).
- **One study at a time.** A lock beside the folder (``filelock``; the kernel releases it
  when its process dies, so a killed run never leaves it stuck); a second study on the
  same folder is refused at once, naming the running one.
- **Complete results at every instant.** A run writes into its own staging folder beside
  ``--out`` (``.NAME.dino-rnn/staging-*``) and, once finished, swaps it with the
  previous results in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
  ``renamex_np(RENAME_SWAP)``). A kill at any moment, SIGKILL included, leaves ``--out``
  holding the previous complete results or the new complete ones. What a killed run
  leaves beside it is cleaned by the next run under the same rules: a staging folder
  (marked as such) is removed; a replaced results folder loses only the files its
  manifest lists, and anything else found in it is moved back into ``--out``. Where the
  atomic swap is not available, two renames are used, and the next run puts back a
  results folder caught between them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from .files import _umask, write_json
from .params import ParameterError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
REFERENCE = RESULTS / "reference"
STUDY = RESULTS / "study"
NOTEBOOK_RESULTS = RESULTS / "notebooks"
BENCHMARK_JSON = RESULTS / "benchmark.json"  # dino-rnn bench --out results/benchmark.md writes it beside the .md

# Inside a results folder (a study's, the reference, RESULTS_DIR of a notebook run by hand):
METRICS, PLOTS, CHECKPOINTS, ANBN_DIR = "metrics", "plots", "checkpoints", "anbn"
STUDY_JSON = "study.json"  # what the study that wrote the folder ran, and how it went


def result_paths(results_dir, arch: str, seed: int, checkpoint_suffix: str = ".pt") -> dict[str, Path]:
    """Where one model run's metrics JSON, learning-curve plot and checkpoint go."""
    r, stem = Path(results_dir), f"{arch}-seed{seed}"
    return {
        "metrics": r / METRICS / f"{stem}.json",
        "plot": r / PLOTS / f"{stem}.png",
        "checkpoint": r / CHECKPOINTS / f"{stem}{checkpoint_suffix}",
    }


def anbn_paths(results_dir, seed: int) -> dict[str, Path]:
    """Where one aⁿbⁿ run's JSON and overlay plot go."""
    r = Path(results_dir)
    return {"json": r / ANBN_DIR / f"anbn-seed{seed}.json", "plot": r / PLOTS / f"anbn-seed{seed}.png"}


MANIFEST = ".dino-rnn.json"
MARKER = ".dino-rnn-staging"  # in a staging folder only: everything in it is the run's own
LOCK, LOCK_INFO = "lock", "lock.json"


# ---------------------------------------------------------------------------
# File-system steps (module-level so the tests can make each one fail in turn)
# ---------------------------------------------------------------------------


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def exchange(a: Path, b: Path) -> None:
    """Swap two existing folders in one atomic step; ``NotImplementedError`` where impossible."""
    libc = _libc()
    if sys.platform.startswith("linux") and libc is not None and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        rc = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif sys.platform == "darwin" and libc is not None and hasattr(libc, "renamex_np"):
        rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), 2)  # RENAME_SWAP
    else:
        raise NotImplementedError("no atomic exchange on this platform")
    if rc != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise NotImplementedError(os.strerror(err))
        raise OSError(err, os.strerror(err), str(a), None, str(b))


def rename(a: Path, b: Path) -> None:
    os.rename(a, b)


def unlink(p: Path) -> None:
    os.unlink(p)


def rmdir(p: Path) -> None:
    os.rmdir(p)


def rmtree(p: Path) -> None:
    shutil.rmtree(p)


# ---------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------


def files_in(folder: Path) -> list[str]:
    """Every file (and symlink) below ``folder`` as a relative POSIX path, sorted; links not followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():  # a link to a folder is an entry, never walked into
                filenames.append(d)
                dirnames.remove(d)
        out += [(base / f).relative_to(folder).as_posix() for f in filenames]
    return sorted(out)


def read_manifest(folder: Path) -> list[str] | None:
    """The files a study recorded writing into ``folder``; ``None`` without a readable manifest."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
        files = m["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list):
        return None
    # Only plain relative paths inside the folder: a manifest never lets a run reach outside it.
    return [f for f in files if isinstance(f, str) and _safe(f)]


def _safe(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and rel != MANIFEST


def write_manifest(folder: Path) -> list[str]:
    files = [f for f in files_in(folder) if f not in (MANIFEST, MARKER)]
    write_json(folder / MANIFEST, {"written_by": "dino-rnn study", "files": files})
    return files


# ---------------------------------------------------------------------------
# The folder a study writes
# ---------------------------------------------------------------------------


class ResultsFolder:
    """A results folder (``--out``) a study owns: ownership checks, the lock, staging and the swap."""

    def __init__(self, path, name: str = "--out"):
        p = Path(path).expanduser()
        if p.exists() and not p.is_dir():
            raise ParameterError(f"{name} {str(p)!r} is a file, not a folder; give a folder path")
        # The real location: a symlinked --out is followed, so the swap happens where the files are.
        self.path = p.resolve()
        self.name = name
        self.work = self.path.parent / f".{self.path.name}.dino-rnn"
        self.notes: list[str] = []  # what recovery or promotion did that the user should hear about

    # -- checks ------------------------------------------------------------------
    def foreign_files(self) -> list[str]:
        """Files in the folder that no study's manifest lists (the manifest itself excluded)."""
        if not self.path.exists():
            return []
        present = [f for f in files_in(self.path) if f != MANIFEST]
        owned = set(read_manifest(self.path) or [])
        return [f for f in present if f not in owned]

    def check_owned(self) -> None:
        """Refuse, with one line, a folder holding files that no study wrote."""
        foreign = self.foreign_files()
        if not foreign:
            return
        shown = ", ".join(repr(f) for f in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        if (self.path / MANIFEST).exists():
            what = f"holds files that dino-rnn study did not write ({shown})"
        else:
            what = f"is not empty and was not written by dino-rnn study (it holds {shown})"
        raise ParameterError(
            f"{self.name} {str(self.path)!r} {what}; "
            "a study replaces its whole folder, so give a new or empty folder, or move those files out"
        )

    def _make_work(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.work.mkdir(exist_ok=True)
        except OSError as e:
            raise ParameterError(
                f"{self.name} {str(self.path)!r}: cannot create {str(self.work)!r} beside it ({e.strerror}); "
                "give a folder inside one you can write to"
            ) from None

    # -- the lock ----------------------------------------------------------------
    @contextmanager
    def lock(self, command: str = "dino-rnn study"):
        """Hold the folder for one study; a second one is refused at once, naming the holder."""
        from filelock import FileLock, Timeout

        self._make_work()
        lock = FileLock(str(self.work / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ParameterError(
                f"{self.name} {str(self.path)!r} is in use by another study ({self._holder()}); "
                "wait for it to finish, or give another folder"
            ) from None
        try:
            write_json(self.work / LOCK_INFO, {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": command,
            })
            yield self
        finally:
            try:
                unlink(self.work / LOCK_INFO)
            except OSError:
                pass
            lock.release()

    def _holder(self) -> str:
        try:
            i = json.loads((self.work / LOCK_INFO).read_text(encoding="utf-8"))
            return f"pid {i['pid']} on {i['host']}, started {i['started']}: {i['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "its details are not readable yet"

    # -- staging and the swap ----------------------------------------------------
    def new_staging(self) -> Path:
        """An empty folder for a new run, beside ``--out`` (same file system), marked as staging."""
        self._make_work()
        d = self.work / f"staging-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        d.mkdir()
        (d / MARKER).write_text(f"{os.getpid()}\n", encoding="utf-8")
        return d

    def promote(self, staging: Path) -> None:
        """Make a finished run's staging folder the results, in one step; then discard the old ones.

        Order: write the manifest, unmark the folder, swap (or, for a first run, rename).
        A kill before the swap leaves the old results in place; after it, the new ones.
        """
        write_manifest(staging)
        unlink(staging / MARKER)
        if self.path.exists():
            try:
                exchange(staging, self.path)
                old = staging
            except NotImplementedError:
                # Two renames: between them --out is missing, and recover() puts the old one back.
                old = self.work / f"previous-{staging.name}"
                rename(self.path, old)
                try:
                    rename(staging, self.path)
                except BaseException:
                    rename(old, self.path)  # if this fails too, recover() puts it back next time
                    raise
        else:
            rename(staging, self.path)
            old = None
        if old is not None:
            # The new results are in place: a failure from here on only leaves old files beside them.
            try:
                self.discard(old)
            except OSError as e:
                self.notes.append(f"could not remove all of the previous results ({e}); the next run will")

    def install(self, staged: Path, sub: str, files: list[str]) -> None:
        """Put a rebuilt sub-folder (``html``, say, built in ``staged``) in place of the results' own.

        The manifest first lists the new ``files`` (paths in the results folder), so a kill at
        any moment leaves only files it lists; then the two folders are swapped in one step
        (two renames where that is not available). The previous sub-folder ends up at
        ``staged``, for the caller to discard with its staging folder.
        """
        listed = read_manifest(self.path) or []
        if set(files) - set(listed):
            write_json(self.path / MANIFEST, {"written_by": "dino-rnn study", "files": sorted(set(listed) | set(files))})
        target = self.path / sub
        if not target.exists():
            rename(staged, target)
            return
        try:
            exchange(staged, target)
        except NotImplementedError:
            old = staged.with_name(f"{staged.name}.previous")
            rename(target, old)
            rename(staged, target)

    def abandon(self, staging: Path) -> None:
        """Remove a staging folder of this process's own run (interrupted or failed)."""
        if staging.exists():
            self.discard(staging)

    # -- cleaning up ----------------------------------------------------------------
    def discard(self, folder: Path) -> None:
        """Delete what a run owns in ``folder`` (staging or replaced results); keep everything else.

        A marked staging folder is entirely the run's own and goes, as does a folder with
        neither mark nor manifest (files a killed run's worker wrote after its staging
        folder was removed). A replaced results folder loses exactly the files its manifest
        lists; anything else in it (say, a file someone saved there during the run) is moved
        back into ``--out``, and only then does the manifest go.
        """
        listed = read_manifest(folder)
        if (folder / MARKER).exists() or listed is None:
            # A staging folder, or what a killed run's last processes wrote after it was
            # removed: never a user's file, since those only ever sit beside a manifest.
            rmtree(folder)
            return
        for rel in listed:
            p = folder / rel
            if p.is_file() or p.is_symlink():
                unlink(p)
        self._carry_back(folder)  # before the manifest goes, so a kill here repeats this step
        unlink(folder / MANIFEST)
        _prune_empty(folder)

    def _carry_back(self, folder: Path) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for rel in files_in(folder):
            if rel in (MANIFEST, MARKER):
                continue
            dest = self.path / rel
            if dest.exists() or dest.is_symlink():
                dest = self.path / f"kept-{stamp}" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            rename(folder / rel, dest)
            self.notes.append(f"kept {dest} (it was not written by the study)")

    def recover(self) -> None:
        """Clean up after runs that were killed (call with the lock held).

        A results folder caught between the two renames of the fallback is put back
        first; every other leftover is discarded under :meth:`discard`'s rules.
        """
        if not self.work.is_dir():
            return
        leftovers = sorted(
            (d for d in self.work.iterdir() if d.is_dir() and not d.is_symlink()),
            key=lambda d: d.stat().st_mtime,
            reverse=True,
        )
        if not self.path.exists():
            for d in leftovers:
                if (d / MANIFEST).exists() and not (d / MARKER).exists():
                    rename(d, self.path)
                    self.notes.append(f"restored {self.path} from an interrupted run's {d.name}")
                    leftovers.remove(d)
                    break
        for d in leftovers:
            self.discard(d)


def _prune_empty(folder: Path) -> None:
    """Remove empty folders below and including ``folder`` (rmdir never removes content)."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda t: -len(t[0])):
        try:
            rmdir(Path(dirpath))
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Incremental mode: a folder that keeps every finished piece (``dino-rnn sweep``)
# ---------------------------------------------------------------------------

SWEEP_WRITER = "dino-rnn sweep"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class IncrementalFolder(ResultsFolder):
    """A results folder that grows one complete piece at a time, for runs that resume.

    The same guarantees as a study's folder, without the final swap (a sweep keeps every
    point it finished, so an interrupted sweep resumes where it stopped):

    - **Ownership.** The manifest ``.dino-rnn.json`` (``written_by: "dino-rnn sweep"``) lists
      every file the sweeps put here; a folder holding any other file, or written by
      another command (a study replaces its whole folder), is refused with one line.
    - **The lock** of :meth:`ResultsFolder.lock`, with :meth:`recover` cleaning what a killed
      run left in the work folder ``.NAME.dino-rnn/``.
    - **Complete pieces at every instant.** :meth:`put` first rewrites the manifest (written
      to a temporary file in the work folder, fsynced, ``os.replace``-d into place) so it
      lists the new files, then writes each file the same way. A kill at any instant leaves
      every file either absent, the previous complete version, or the new complete one,
      and the folder still owned. Callers write a piece's "finished" file (a point's
      metrics) last, so its presence means the whole piece is there.
    """

    def __init__(self, path, name: str = "--out"):
        super().__init__(path, name)
        self._incoming: Path | None = None

    def check_owned(self) -> None:
        """Refuse, with one line, a folder holding files no sweep wrote (or written by another command)."""
        if not self.path.exists():
            return
        try:
            writer = json.loads((self.path / MANIFEST).read_text(encoding="utf-8")).get("written_by")
        except (OSError, ValueError, AttributeError):
            writer = None
        if writer not in (None, SWEEP_WRITER) and files_in(self.path) != [MANIFEST]:
            raise ParameterError(
                f"{self.name} {str(self.path)!r} holds results of {writer!r}, not of a sweep; "
                "give a new or empty folder, or a folder an earlier dino-rnn sweep wrote"
            )
        foreign = self.foreign_files()
        if foreign:
            shown = ", ".join(repr(f) for f in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ParameterError(
                f"{self.name} {str(self.path)!r} holds files that dino-rnn sweep did not write ({shown}); "
                "give a new or empty folder, or move those files out"
            )

    def listed(self) -> list[str]:
        """The files the manifest lists (some may be missing: listed before being written)."""
        return read_manifest(self.path) or []

    def _tmp(self, label: str) -> Path:
        if self._incoming is None or not self._incoming.is_dir():
            self._make_work()
            self._incoming = self.work / f"incoming-{os.getpid()}"
            self._incoming.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{label}.", suffix=".tmp", dir=self._incoming)
        os.close(fd)
        return Path(tmp)

    def _write_atomic(self, dest: Path, data: bytes) -> None:
        tmp = self._tmp(dest.name)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
        finally:
            if tmp.exists():
                tmp.unlink()

    def write_listing(self, files) -> None:
        """The manifest, listing exactly ``files`` (written atomically)."""
        rels = sorted({f for f in files if _safe(f)})
        self.path.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"written_by": SWEEP_WRITER, "files": rels}, indent=1) + "\n"
        self._write_atomic(self.path / MANIFEST, data.encode("utf-8"))

    def put(self, files: dict[str, bytes]) -> list[str]:
        """Write ``{relative path: bytes}`` into the folder, each file complete; returns the paths.

        The manifest lists the files before any is written; the files go in the order given
        (put the one that marks the piece finished last).
        """
        for rel in files:
            if not _safe(rel):
                raise ValueError(f"not a relative path inside the folder: {rel!r}")
        listed = self.listed()
        if set(files) - set(listed):
            self.write_listing([*listed, *files])
        for rel, data in files.items():
            self._write_atomic(self.path / rel, data)
        return list(files)

    def tidy_listing(self) -> None:
        """Drop from the manifest the files that are not there (listed by a run killed before writing them)."""
        listed = self.listed()
        present = [f for f in listed if (self.path / f).is_file() or (self.path / f).is_symlink()]
        if present != listed or not (self.path / MANIFEST).exists():
            self.write_listing(present)

    def close(self) -> None:
        """Remove this process's (empty) temporary folder."""
        if self._incoming is not None and self._incoming.is_dir():
            rmtree(self._incoming)
        self._incoming = None

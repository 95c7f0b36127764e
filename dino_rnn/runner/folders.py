"""Results folders: where runs write, which files a study owns, and how a run replaces them safely.

Where results live (one place decides it)::

    results/reference/   the committed five-seed run behind the README; only
                         ``dino-rnn study --reference`` writes here
    results/study/       ``dino-rnn study`` (default ``--out``); ignored by git
    results/notebooks/   the notebooks run by hand in Jupyter (their RESULTS_DIR); ignored by git

and, inside any of them, where each file goes (:func:`result_paths`, :func:`anbn_paths`,
:data:`STUDY_JSON`).

Every writer (study, sweep, report, bench, the notebooks' ``RESULTS_DIR``) asks this module
first, and the rules are these:

- **The reference is marked.** ``results/reference`` holds a tracked file,
  ``.dino-rnn-reference``; a folder carrying it, or lying inside one, is refused by every
  writer (:func:`refuse_reference`) unless it was asked for with ``--reference``, however
  the folder is reached (another spelling, a symlink, a bind mount, a second clone).
- **Ownership.** A run writes a manifest, ``.dino-rnn.json``, naming the command that wrote
  the folder and listing every file it put there. A later run of the same command takes
  the folder only if every file in it is listed (or it is empty, or does not exist yet);
  another command's folder, or any unlisted file, is refused before any work, with one line.
- **Deletion only of what is provably ours.** A run deletes only files a manifest lists and
  folders it marked as its own (``.dino-rnn-staging``: staging and temporary folders in the
  hidden work folder). Anything else it meets is kept: a file saved into the results
  during a run is moved into the new results (under ``kept-DATE/`` on a name clash), and
  a foreign folder in the work folder is left alone.
- **One run at a time.** A lock in the work folder ``.NAME.dino-rnn/`` beside the results
  (``filelock``; the kernel releases it when its process dies, so a killed run never
  leaves it stuck); a second run on the same folder is refused at once, naming the first.
- **Complete results at every instant.** A study writes into its own staging folder beside
  ``--out`` (``.NAME.dino-rnn/staging-*``) and, once finished, swaps it with the
  previous results in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
  ``renamex_np(RENAME_SWAP)``). A kill at any moment, SIGKILL included, leaves ``--out``
  holding the previous complete results or the new complete ones; the next run cleans
  what the killed one left, under the rules above. Where the atomic swap is not
  available, two renames are used, and the next run puts back a folder caught between them.
- **The report command** (:func:`rebuild`, ``dino-rnn report``) replaces only ``html/``, under
  the same lock, staging and manifest.
- **Refused up front**: a folder that cannot be written, a mount point (the swap needs the
  same file system beside it), a name too long for the work folder beside it.
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

from dino_rnn.files import (
    _umask, write_json, MANIFEST, MARKER, REFERENCE_MARK, OWN_MARKS, resolved, refuse_reference, _write_test, refuse_work_folder, check_name, check_same_filesystem,
)

LOCK, LOCK_INFO = "lock", "lock.json"
from dino_rnn.settings import ParameterError

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


def write_manifest(folder: Path, writer: str = "dino-rnn study") -> list[str]:
    files = [f for f in files_in(folder) if f not in OWN_MARKS]
    write_json(folder / MANIFEST, {"written_by": writer, "files": files})
    return files


def writer_of(folder: Path) -> str | None:
    """The command whose manifest ``folder`` holds (``None`` without a readable one)."""
    try:
        writer = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8")).get("written_by")
    except (OSError, ValueError, AttributeError):
        return None
    return writer if isinstance(writer, str) else None


def _shown(files: list[str]) -> str:
    return ", ".join(repr(f) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")


# ---------------------------------------------------------------------------
# The folder a study writes
# ---------------------------------------------------------------------------


class ResultsFolder:
    """A results folder (``--out``) a study owns: ownership checks, the lock, staging and the swap.

    The one rule behind every step: a run deletes only files a manifest lists and folders
    it marked as its own (staging and temporary folders); anything else it finds is kept.
    ``reference=True`` admits the committed reference (``--reference``); any other folder that
    is, or lies inside, a reference is refused on construction, as is a name too long.
    """

    WRITER = "dino-rnn study"

    def __init__(self, path, name: str = "--out", *, reference: bool = False):
        p = Path(path).expanduser()
        if p.exists() and not p.is_dir():
            raise ParameterError(f"{name} {str(p)!r} is a file, not a folder; give a folder path")
        # The real location: a symlinked --out is followed, so the swap happens where the files are.
        self.path = resolved(p, name)
        self.name = name
        check_name(self.path, name)
        refuse_work_folder(self.path, name)
        refuse_reference(p, name, allowed=reference)
        self.reference = reference
        self.work = self.path.parent / f".{self.path.name}.dino-rnn"
        self.notes: list[str] = []  # what recovery or promotion did that the user should hear about

    # -- checks ------------------------------------------------------------------
    def foreign_files(self) -> list[str]:
        """Files in the folder that no manifest lists (our own marks excluded)."""
        if not self.path.exists():
            return []
        owned = set(read_manifest(self.path) or [])
        return [f for f in files_in(self.path) if f not in OWN_MARKS and f not in owned]

    def check_owned(self) -> None:
        """Refuse, with one line, a folder another command wrote, or holding files nobody listed."""
        if not self.path.exists():
            return
        check_same_filesystem(self.path, self.name)
        writer = writer_of(self.path)
        if writer not in (None, self.WRITER):
            raise ParameterError(
                f"{self.name} {str(self.path)!r} holds the results of {writer!r}, not of {self.WRITER}; "
                "give a new or empty folder"
            )
        foreign = self.foreign_files()
        if not foreign:
            return
        raise ParameterError(
            f"{self.name} {str(self.path)!r} holds files that {self.WRITER} did not write ({_shown(foreign)}); "
            "give a new or empty folder, or move those files out"
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

    def check_writable(self) -> None:
        """Refuse, before any work, a folder (or the one beside it) this process cannot write."""
        self._make_work()
        for d in (self.work, self.path) if self.path.is_dir() else (self.work,):
            try:
                _write_test(d)
            except OSError as e:
                raise ParameterError(
                    f"{self.name} {str(self.path)!r}: cannot write in {str(d)!r} ({e.strerror}); "
                    "give a folder you can write to, or fix its permissions"
                ) from None

    # -- the lock ----------------------------------------------------------------
    @contextmanager
    def lock(self, command: str = "dino-rnn study"):
        """Hold the folder for one run; a second one is refused at once, naming the holder."""
        from filelock import FileLock, Timeout

        self.check_writable()
        lock = FileLock(str(self.work / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ParameterError(
                f"{self.name} {str(self.path)!r} is in use by another run ({self._holder()}); "
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
    def new_marked(self, prefix: str) -> Path:
        """A new empty folder in the work folder, marked as this run's own (removed when done or recovered)."""
        self._make_work()
        d = self.work / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{os.urandom(3).hex()}"
        d.mkdir()
        (d / MARKER).write_text(f"{os.getpid()}\n", encoding="utf-8")
        return d

    def new_staging(self) -> Path:
        """An empty folder for a new run, beside ``--out`` (same file system), marked as staging."""
        return self.new_marked("staging")

    def promote(self, staging: Path) -> None:
        """Make a finished run's staging folder the results, in one step; then discard the old ones.

        Order: write the manifest, unmark the folder, swap (or, for a first run, rename).
        A kill before the swap leaves the old results in place; after it, the new ones.
        """
        if self.reference:
            (staging / REFERENCE_MARK).write_text(_REFERENCE_TEXT, encoding="utf-8")
        write_manifest(staging, self.WRITER)
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
                self.discard_replaced(old)
            except OSError as e:
                self.notes.append(f"could not remove all of the previous results ({e}); the next run will")

    def install(self, staged: Path, sub: str, files: list[str]) -> None:
        """Put a rebuilt sub-folder (``html``, say, built in ``staged``) in place of the results' own.

        The manifest first lists the new ``files`` (paths in the results folder), so a kill at
        any moment leaves only files it lists; then the two folders are swapped in one step
        (two renames where that is not available). Of the previous sub-folder, the files the
        manifest listed are deleted and anything else is moved back into the new one.
        """
        listed = read_manifest(self.path) or []
        if set(files) - set(listed):
            write_json(self.path / MANIFEST, {"written_by": self.WRITER, "files": sorted(set(listed) | set(files))})
        target = self.path / sub
        if not target.exists():
            rename(staged, target)
            return
        try:
            exchange(staged, target)
            old = staged
        except NotImplementedError:
            old = staged.with_name(f"{staged.name}.previous")
            rename(target, old)
            rename(staged, target)
        for rel in files_in(old):  # the previous sub-folder: listed files go, anything else comes back
            if f"{sub}/{rel}" in listed:
                unlink(old / rel)
        self._carry_back(old, self.path / sub)
        _prune_empty(old)

    def abandon(self, marked: Path) -> None:
        """Remove a folder this run marked as its own (staging, temporary), if it is still there."""
        if (marked / MARKER).is_file():
            _remove_marked(marked)
        elif marked.exists():
            self.discard_replaced(marked)

    # -- cleaning up ----------------------------------------------------------------
    def discard_replaced(self, folder: Path) -> None:
        """Delete the files a replaced results folder's manifest lists; move anything else back.

        Whatever no manifest lists (a file someone saved into the folder during the run, or
        every file of a folder that had no manifest) is moved back into ``--out`` (under
        ``kept-DATE/`` where a file of that name exists), and only then does the manifest go.
        """
        for rel in read_manifest(folder) or []:
            p = folder / rel
            if p.is_file() or p.is_symlink():
                unlink(p)
        for mark in (REFERENCE_MARK, MARKER):
            if (folder / mark).is_file():
                unlink(folder / mark)
        self._carry_back(folder, self.path)  # before the manifest goes, so a kill here repeats this step
        if (folder / MANIFEST).exists():
            unlink(folder / MANIFEST)
        _prune_empty(folder)

    def _carry_back(self, folder: Path, into: Path) -> None:
        """Move every file of ``folder`` (our marks aside) into ``into``, beside what is there."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for rel in files_in(folder):
            if rel in OWN_MARKS:
                continue
            dest = into / rel
            if dest.exists() or dest.is_symlink():
                dest = into / f"kept-{stamp}" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            rename(folder / rel, dest)
            self.notes.append(f"kept {dest} (it was not written by {self.WRITER})")

    def recover(self) -> None:
        """Clean up after runs that were killed (call with the lock held).

        A results folder caught between the two renames of the fallback is put back first.
        Then every folder of the work folder that a run marked as its own is removed, every
        replaced results folder (it holds a manifest) goes under :meth:`discard_replaced`'s
        rules, and anything else is left where it is, with a note.
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
            if (d / MARKER).is_file():
                _remove_marked(d)
            elif (d / MANIFEST).exists():
                self.discard_replaced(d)
            elif not files_in(d):
                _prune_empty(d)
            else:
                self.notes.append(f"left {d} alone (not a folder of ours; move it if you need it)")


_REFERENCE_TEXT = (
    "This folder holds the committed reference results of dino-rnn.\n"
    "Every dino-rnn writer refuses it (and any folder inside it) unless asked with --reference.\n"
)


def _remove_marked(folder: Path) -> None:
    """Remove a marked folder, its mark last: a removal cut short leaves it marked, never a
    folder of unmarked files that the next run would keep as someone else's."""
    for entry in folder.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            rmtree(entry)
        else:
            unlink(entry)
    unlink(folder / MARKER)
    try:
        rmdir(folder)
    except OSError:  # a process still writing there made a new file: mark the folder again
        (folder / MARKER).write_text(f"{os.getpid()}\n", encoding="utf-8")
        raise


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

    WRITER = SWEEP_WRITER

    def __init__(self, path, name: str = "--out"):
        super().__init__(path, name)
        self._incoming: Path | None = None

    def listed(self) -> list[str]:
        """The files the manifest lists (some may be missing: listed before being written)."""
        return read_manifest(self.path) or []

    def _tmp(self, label: str) -> Path:
        if self._incoming is None or not self._incoming.is_dir():
            self._incoming = self.new_marked("incoming")
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
        data = json.dumps({"written_by": self.WRITER, "files": rels}, indent=1) + "\n"
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
        """Remove this process's temporary folder."""
        if self._incoming is not None:
            self.abandon(self._incoming)
        self._incoming = None


def rebuild(results, *, command: str = "dino-rnn report", log=print, reference: bool = False) -> Path:
    """``dino-rnn report``: rebuild ``html/`` of a study's results folder, training nothing.

    Writes only ``RESULTS/html`` (built beside it and swapped in, under the folder's lock, so
    a study or another report never sees half of it) and, if it wrote a file the folder's
    manifest does not list yet, the manifest. ``reference``: the folder may be the committed
    reference (``--reference``). Returns the index page's path.

    The pages are the report's (:func:`dino_rnn.report.site.build_site`); the folder's lock,
    staging and manifest are this module's.
    """
    from dino_rnn.report.site import HTML, INDEX, build_site
    from dino_rnn.report.tables import load_metrics

    folder = ResultsFolder(results, name="RESULTS", reference=reference)
    if not folder.path.is_dir():
        raise ParameterError(f"RESULTS {str(results)!r} does not exist; run dino-rnn study first (it writes results/study)")
    if read_manifest(folder.path) is None:
        raise ParameterError(
            f"RESULTS {str(results)!r} was not written by dino-rnn study (it has no {'.dino-rnn.json'}); "
            "dino-rnn report rebuilds the HTML of a study's results folder")
    if not load_metrics(folder.path):
        raise ParameterError(f"RESULTS {str(results)!r} has no metrics/*.json: nothing to report")
    folder.check_owned()
    with folder.lock(command):
        folder.recover()
        folder.check_owned()
        staging = folder.new_staging()
        try:
            written = build_site(folder.path, staging / HTML, generator=command, log=log)
            folder.install(staging / HTML, HTML, [f"{HTML}/{f}" for f in written])
        finally:
            folder.abandon(staging)
    return folder.path / HTML / INDEX

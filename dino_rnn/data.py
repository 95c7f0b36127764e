"""Data: the Dino Names file, its normalisation, the vocabulary, one-hot encoding and the split.

Where the names file comes from, in order:

1. an explicit ``path`` argument (the CLI's ``--data``),
2. the ``DINO_RNN_DATA`` environment variable (any names file a user brings),
3. ``data/dino_names.txt`` in the project, downloaded on first use from
   ``DINO_RNN_DATA_URL`` (default: the upstream URL below; a ``file://`` URL works),
   checked against the published sha256 and written atomically. Each wait for the server
   (connecting, every read) gives up after ``DINO_RNN_DOWNLOAD_TIMEOUT`` seconds (default
   30). Any failure — refused connection, time-out, HTTP error status, a connection closed
   before the end, more than ``MAX_NAMES_BYTES`` — is one :class:`DataError` line; the
   partial download is removed and never appears at the destination.

A names file must be a regular file (not a named pipe, a device or a socket) of at most
``MAX_NAMES_BYTES`` (50 MB, far more than any names list): both are checked with
``os.stat`` before the file is opened, and the read itself stops at the limit + 1 byte, so
a file that grows in between cannot take the machine's memory.

Normalisation (as in the published study): every line is one name; a UTF-8 byte-order
mark, Windows line endings and surrounding whitespace are removed, names are
lower-cased, spaces inside a name are removed, blank lines are skipped. Duplicate
names are *kept* (the published 1536-name corpus has 12 repeated lines) and counted.
'.' is the end-of-name marker, so a name that contains '.' is refused.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import random
import socket
import stat
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dino_rnn.settings import ParameterError

if TYPE_CHECKING:  # torch is imported where tensors are made: reading and checking names needs
    import torch  # none of it, and `dino-rnn study`'s own process and its workers never make one

# ---------------------------------------------------------------------------
# Where the data lives
# ---------------------------------------------------------------------------

DATA_URL = (
    "https://raw.githubusercontent.com/IvLabs/Natural-Language-Processing/"
    "master/char_rnns/dino_names.txt"
)
DATA_SHA256 = "ad6465621cf56c08f71d4fbb40cf7eab763f9df42c54cc460d6c4d86e9c927fb"


def _data_dir() -> Path:
    """Where the downloaded Dino Names file is kept: ``data/`` of the clone the package runs from, or
    for a package installed from an index or a wheel, the user's cache (``$XDG_CACHE_HOME/dino-rnn``,
    else ``~/.cache/dino-rnn``), never the environment's own folders."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "dino_rnn").is_dir():
        return root / "data"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "dino-rnn"


DATA_DIR = _data_dir()
DEFAULT_FILE = DATA_DIR / "dino_names.txt"

END = "."  # the end-of-name marker
MIN_NAMES = 50  # the fewest names for which int(0.02 * n) >= 1: a non-empty validation set
MAX_NAMES_BYTES = 50_000_000  # a names file or download larger than this is refused (Dino Names: 19909 bytes)
DOWNLOAD_TIMEOUT = 30.0  # seconds per wait for the server; $DINO_RNN_DOWNLOAD_TIMEOUT overrides


class DataError(ValueError):
    """A names file that cannot be used; the message is one line that says what to do."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _size_text(n: int) -> str:
    return f"{n // 1_000_000} MB" if n % 1_000_000 == 0 else f"{n:,} bytes"


def _file_kind(mode: int) -> str | None:
    """What a non-regular file is, for the message; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "a special file"


def download_timeout(timeout: float | None = None) -> float:
    """``timeout``, else ``$DINO_RNN_DOWNLOAD_TIMEOUT``, else :data:`DOWNLOAD_TIMEOUT` seconds."""
    if timeout is not None:
        return timeout
    raw = os.environ.get("DINO_RNN_DOWNLOAD_TIMEOUT", "").strip()
    if not raw:
        return DOWNLOAD_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ParameterError(f"DINO_RNN_DOWNLOAD_TIMEOUT must be a number of seconds greater than 0, not {raw!r}")
    return value


class _Failed(Exception):
    """A download failure, with the reason to show in the one-line DataError."""


def _reason(e: BaseException, timeout: float) -> str:
    """A short, one-line reason for a failed download."""
    if isinstance(e, _Failed):
        return str(e)
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        e = e.reason  # connect errors arrive wrapped
    if isinstance(e, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(e, http.client.IncompleteRead):
        return f"the connection closed after {len(e.partial)} bytes, before the end"
    if isinstance(e, urllib.error.URLError):
        e = e.reason
    return str(getattr(e, "strerror", None) or e) or type(e).__name__


def download(url: str, dest: Path, sha256: str = DATA_SHA256, timeout: float | None = None) -> Path:
    """Fetch ``url`` into ``dest``: verified against ``sha256`` and moved into place atomically.

    ``timeout`` (default ``$DINO_RNN_DOWNLOAD_TIMEOUT`` or 30 s) bounds each wait for the
    server. Every failure is one :class:`DataError` line; a partial, oversized or
    mismatching download never appears at ``dest`` and no temporary file is left behind.
    """
    dest = Path(dest)
    timeout = download_timeout(timeout)
    limit = MAX_NAMES_BYTES
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    try:
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
                expected = getattr(r, "length", None)  # Content-Length, when the server sent one
                if expected is not None and expected > limit:
                    raise _Failed(f"more than {_size_text(limit)}, larger than any names list")
                got = 0
                while chunk := r.read(min(1 << 16, limit + 1 - got)):
                    got += len(chunk)
                    if got > limit:
                        raise _Failed(f"more than {_size_text(limit)}, larger than any names list")
                    f.write(chunk)
                # http.client ends a body cut short without complaint when Content-Length was sent
                declared = r.headers.get("Content-Length", "").strip() if getattr(r, "headers", None) else ""
                if declared.isdigit() and not getattr(r, "chunked", False) and got < int(declared):
                    raise _Failed(f"the connection closed after {got} of {int(declared)} bytes")
        except (_Failed, urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()  # it holds the error page's connection
            reason = " ".join(_reason(e, timeout).split())
            raise DataError(
                f"cannot download the Dino Names file from {url} ({reason}); "
                "set DINO_RNN_DATA=/path/to/names.txt to use a local file, "
                "or DINO_RNN_DATA_URL to another source (file:// works)"
            ) from None
        actual = sha256_of(Path(tmp))
        if actual != sha256:
            raise DataError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; "
                "the download was discarded"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def resolve_data_path(path: str | os.PathLike | None = None) -> Path:
    """The names file to use: ``path``, else ``$DINO_RNN_DATA``, else the downloaded Dino Names."""
    if path is None:
        path = os.environ.get("DINO_RNN_DATA") or None
    if path is not None:
        return Path(path).expanduser()
    if not DEFAULT_FILE.exists():
        url = os.environ.get("DINO_RNN_DATA_URL") or DATA_URL
        download(url, DEFAULT_FILE)
        return DEFAULT_FILE
    kind = _file_kind(os.stat(DEFAULT_FILE).st_mode)
    if kind is not None:  # never open it: a named pipe would block, a device never end
        raise DataError(f"{DEFAULT_FILE} is {kind}, not a regular file; delete it to download it again")
    if sha256_of(DEFAULT_FILE) != DATA_SHA256:
        raise DataError(
            f"{DEFAULT_FILE} does not match the published checksum {DATA_SHA256}; "
            "delete it to download it again"
        )
    return DEFAULT_FILE


# ---------------------------------------------------------------------------
# Reading and normalising
# ---------------------------------------------------------------------------


@dataclass
class NameReport:
    """What normalisation did to a names file (for the notebooks and the CLI to print)."""

    path: str
    names: int = 0
    blank_lines: int = 0
    lowercased: int = 0  # names that had upper-case letters
    whitespace: int = 0  # names with surrounding or inner whitespace removed
    duplicates: int = 0  # names that repeat an earlier one (kept)
    crlf: bool = False
    bom: bool = False
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.names} names from {self.path}"]
        if self.blank_lines:
            parts.append(f"{self.blank_lines} blank lines skipped")
        if self.lowercased:
            parts.append(f"{self.lowercased} lower-cased")
        if self.whitespace:
            parts.append(f"{self.whitespace} with whitespace removed")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicates kept")
        if self.crlf:
            parts.append("Windows line endings converted")
        if self.bom:
            parts.append("byte-order mark removed")
        return "; ".join(parts)


def _read_bounded(p: Path) -> bytes:
    """The bytes of names file ``p``: a regular file of at most :data:`MAX_NAMES_BYTES`.

    ``os.stat`` first, so a named pipe (whose open blocks), a device (which never ends) or a
    huge file is refused before it is opened; then at most the limit + 1 bytes are read.
    """
    limit = MAX_NAMES_BYTES
    advice = "pass a regular text file with one name per line"
    too_big = f"names file {p} is larger than {_size_text(limit)}, more than any names list; {advice}"
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"names file {p} does not exist; pass --data / DINO_RNN_DATA a file with one name per line") from None
    except OSError as e:
        raise DataError(f"names file {p} cannot be read ({e.strerror}); check its permissions") from None
    except ValueError:  # e.g. a NUL character in the path
        raise DataError(f"names file {str(p)!r} is not a valid path; {advice}") from None
    kind = _file_kind(st.st_mode)
    if kind == "a directory":
        raise DataError(f"names file {p} is a directory, not a file; pass a file with one name per line")
    if kind is not None:
        raise DataError(f"names file {p} is {kind}, not a regular file; {advice}")
    if st.st_size > limit:
        raise DataError(too_big)
    try:
        # O_NONBLOCK: should the path have become a named pipe since the stat, the open
        # does not block (and the fstat below refuses it); it changes nothing for files.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise DataError(f"names file {p} cannot be read ({e.strerror}); check its permissions") from None
    with os.fdopen(fd, "rb") as f:
        kind = _file_kind(os.fstat(f.fileno()).st_mode)
        if kind is not None:
            raise DataError(f"names file {p} is {kind}, not a regular file; {advice}")
        try:
            raw = f.read(limit + 1)
        except OSError as e:
            raise DataError(f"names file {p} cannot be read ({e.strerror}); check its permissions") from None
    if len(raw) > limit:
        raise DataError(too_big)
    return raw


def read_names(path: str | os.PathLike | None = None) -> tuple[list[str], NameReport]:
    """Read and normalise a names file; returns the names and a report of what changed.

    Raises :class:`DataError` with a one-line message for anything unusable.
    """
    p = resolve_data_path(path)
    raw = _read_bounded(p)
    if not raw:
        raise DataError(f"names file {p} is empty; it needs one name per line")
    report = NameReport(path=str(p))
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        report.bom = True
    report.crlf = b"\r\n" in raw
    raw_lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    names: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(raw_lines, start=1):
        if b"\x00" in line:
            raise DataError(f"names file {p} line {lineno} contains a NUL byte; is it a text file?")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"names file {p} line {lineno} is not valid UTF-8; save the file as UTF-8") from None
        squeezed = "".join(text.split())  # surrounding and inner whitespace
        name = squeezed.lower()
        if not name:
            report.blank_lines += 1
            continue
        if END in name:
            raise DataError(
                f"names file {p} line {lineno} ({text.strip()!r}) contains '{END}', "
                "which marks the end of a name; remove it"
            )
        report.whitespace += squeezed != text
        report.lowercased += name != squeezed
        if name in seen:
            report.duplicates += 1
        seen.add(name)
        names.append(name)
    if not names:
        raise DataError(f"names file {p} has only blank lines; it needs one name per line")
    # A trailing newline leaves one empty last line: that is not a "blank line" worth reporting.
    if raw_lines and raw_lines[-1].strip() == b"":
        report.blank_lines -= 1
    report.names = len(names)
    return names, report


def load_names(path: str | os.PathLike | None = None) -> list[str]:
    """The normalised names (1536 for Dino Names), in file order."""
    return read_names(path)[0]


# ---------------------------------------------------------------------------
# Vocabulary and encoding
# ---------------------------------------------------------------------------


class Vocab:
    """The sorted set of characters of the names plus the end marker '.' (27 for Dino Names)."""

    def __init__(self, names: list[str]):
        self.itos: list[str] = sorted(set("".join(names)) | {END})
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def from_symbols(cls, itos) -> "Vocab":
        """The vocabulary with exactly these symbols, in this order (from a checkpoint)."""
        v = cls([])
        v.itos = list(itos)
        v.stoi = {c: i for i, c in enumerate(v.itos)}
        return v

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def end(self) -> int:
        return self.stoi[END]

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise DataError(f"character {e.args[0]!r} is not in the vocabulary {''.join(self.itos)!r}") from None

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in ids)

    def one_hot(self, ids) -> torch.Tensor:
        """(T,) indices -> (T, V) float32 one-hot rows."""
        import torch

        ids = torch.as_tensor(ids, dtype=torch.long)
        return torch.nn.functional.one_hot(ids, len(self)).float()


def make_pair(name: str, vocab: Vocab) -> tuple[list[int], list[int]]:
    """Input and target indices: every character in, the next character (or '.') out.

    For "abc": input a,b,c -> target b,c,'.'.
    """
    ids = vocab.encode(name)
    return ids, ids[1:] + [vocab.end]


@dataclass
class Example:
    """One name, encoded once: one-hot inputs (T, V) and target indices (T,)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor


def encode_names(names: list[str], vocab: Vocab) -> list[Example]:
    """Build every name's tensors once (the published loops rebuilt them at every step)."""
    import torch

    out = []
    for n in names:
        inp, tgt = make_pair(n, vocab)
        out.append(Example(n, vocab.one_hot(inp), torch.tensor(tgt, dtype=torch.long)))
    return out


# ---------------------------------------------------------------------------
# The split
# ---------------------------------------------------------------------------


def split_sizes(n: int, valid_frac: float = 0.02, test_frac: float = 0.03) -> tuple[int, int, int]:
    """(train, valid, test) sizes as the published notebooks computed them: 1460/30/46 of 1536."""
    n_valid, n_test = int(n * valid_frac), int(n * test_frac)
    return n - n_valid - n_test, n_valid, n_test


def split_names(names: list[str], seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """One seeded shuffle, then train / validation / test = 95% / 2% / 3%.

    The same seed gives the same split in every notebook, so every model is trained and
    tested on the same names. Layout as published: train first, then test, validation last.
    """
    if len(names) < MIN_NAMES:
        raise DataError(
            f"{len(names)} names are too few for a 95/3/2 split with non-empty validation "
            f"and test sets; give at least {MIN_NAMES} names"
        )
    shuffled = list(names)
    random.Random(seed).shuffle(shuffled)
    n_train, n_valid, n_test = split_sizes(len(shuffled))
    train = shuffled[:n_train]
    test = shuffled[n_train : n_train + n_test]
    valid = shuffled[n_train + n_test :]
    return train, valid, test

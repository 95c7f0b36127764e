"""Parameter checks shared by the notebooks' ``parameters`` cells and the CLI.

Every check raises :class:`ParameterError` with one line that names the parameter, the
bad value and what to give instead — before any data is read or any model is trained.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path


class ParameterError(ValueError):
    """A parameter that cannot be used; the message is one line that says what to give."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive_int(name: str, value, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        extra = " or None" if allow_none else ""
        raise ParameterError(f"{name} must be a whole number of at least 1{extra}, not {value!r}")
    return value


def seed(value, name: str = "SEED") -> int:
    if not _is_int(value) or value < 0:
        raise ParameterError(f"{name} must be a whole number >= 0, not {value!r}")
    return value


def positive_float(name: str, value, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ParameterError(f"{name} must be a number greater than 0, not {value!r}")
    return float(value)


def choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}")
    return value


def device(value) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
        raise ParameterError(f"DEVICE must be 'auto', 'cpu' or 'cuda', not {value!r}")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ParameterError(f"DEVICE={value!r} but this machine has no CUDA device; use 'auto' or 'cpu'")
    return value


def output_dir(value, name: str = "RESULTS_DIR") -> Path:
    """A folder we can write to: created if missing; a file or a read-only folder is refused."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ParameterError(f"{name} must be a folder path, not {value!r}")
    p = Path(value).expanduser()
    if p.exists() and not p.is_dir():
        raise ParameterError(f"{name} {str(p)!r} is a file, not a folder; give a folder path")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ParameterError(f"{name} {str(p)!r} is not writable ({e.strerror}); give a folder you can write to") from None
    return p


def parse_seeds(text) -> list[int]:
    """Seeds from a list (``[0, 1, 2]``), words (``"0 1 2"``, ``"0,1,2"``) or a range (``"0-4"``)."""
    if _is_int(text):
        return [seed(text)]
    parts: list[str] = []
    if isinstance(text, (list, tuple)):
        for t in text:
            parts.extend(str(t).replace(",", " ").split())
    elif isinstance(text, str):
        parts = text.replace(",", " ").split()
    out: list[int] = []
    for p in parts:
        m = re.fullmatch(r"(\d+)(?:-|\.\.)(\d+)", p)
        if m:
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise ParameterError(f"seed range {p!r} runs backwards; write it low-high, e.g. 0-4")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", p):
            out.append(int(p))
        else:
            raise ParameterError(f"seeds must be whole numbers >= 0, a list (0 1 2) or a range (0-4), not {p!r}")
    if not out:
        raise ParameterError(f"no seeds given in {text!r}; give e.g. 0 or 0 1 2 or 0-4")
    if len(set(out)) != len(out):
        raise ParameterError(f"seed list {text!r} repeats a seed; give each seed once")
    return out

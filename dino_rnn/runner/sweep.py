"""``dino-rnn sweep``: a grid of runs on the executor, resumable, with a report.

    dino-rnn sweep --arch rnn lstm gru --num-layers 1 2 3 --hidden 64 --lr 4e-4 --seeds 0-4 --out results/sweep
    dino-rnn sweep --grid grid.toml --out results/sweep [--scheduler tcp://host:8786] [--jobs N]

A grid's axes are the settings that make a run's numbers, :data:`dino_rnn.settings.COMPARED`,
each under its one name (the notebooks' parameter lower-cased: ``NUM_LAYERS`` -> ``num_layers``,
flag ``--num-layers``): ``arch``, ``epochs``, ``lr``, ``hidden``, ``num_layers``, ``max_names``,
``nonlinearity``, ``clip``, ``temperature``, and any setting added there later. The grid is the
product of their values (an axis not given takes the setting's default; ``arch``, all four
architectures) and the seeds. A grid file (TOML) may hold several such grids as ``[[grid]]``
tables (their union is run, each point once), with top-level keys as their defaults::

    epochs = 40
    seeds = "0-4"
    pairs = ["lstm:gru", "scratch,nonlinearity=none:scratch,nonlinearity=tanh"]

    [[grid]]                           # nn.RNN, nn.LSTM, nn.GRU at 1-3 layers
    arch = ["rnn", "lstm", "gru"]
    num_layers = [1, 2, 3]

    [[grid]]                           # LSTM against GRU over 20 seeds
    arch = ["lstm", "gru"]
    seeds = "0-19"

    [[grid]]                           # the published linear cell beside the tanh cell
    arch = ["scratch"]
    nonlinearity = ["none", "tanh"]

    [[grid]]                           # gradient clipping against none
    arch = "lstm"
    clip = ["none", 1.0]

Keys: every setting of ``COMPARED``, ``seeds`` and ``pairs`` (a single value or a list, except
``seeds``: a list or a range text; ``pairs``: ``"A:B"`` or a list of such texts), at the top or in
``[[grid]]`` tables; and, at the top, ``claims``. A value written as text (every flag's, and
``"none"`` in a file: no clipping, ``"all"``: every name) is read as the setting's type.

Rules, checked before any work (one line, exit status 2): an unknown architecture or key, a
value of the wrong form, an empty list, a value given twice, a grid file that names no key of a
point (an empty file, or ``pairs`` or ``claims`` alone), a value :class:`~dino_rnn.settings.Settings`
refuses (its own one-line error, naming the parameter), a nonlinearity with no from-scratch cell
in its grid, a grid in which the from-scratch cell has no valid point (it has one layer:
``--arch scratch --num-layers 2``), and more than :data:`MAX_POINTS` (1000) points in all, counted
from the axes' sizes before any point is built (``DINO_RNN_MAX_POINTS`` raises it). Where a grid
crosses the from-scratch cell with several layer counts, its points with more than one layer are
skipped, and the sweep says so in one note. ``nonlinearity`` applies to the from-scratch cell only
(``tanh``, or ``none``: the published linear recurrence); the other architectures are their torch
modules (``nn.RNN`` with tanh).

Each point is one :class:`~dino_rnn.experiment.Experiment` (the published protocol, one seed),
run as a task on :class:`~dino_rnn.runner.executor.Executor`: the task gets the names file's bytes and
the point's settings, trains in a temporary folder of its own on one torch thread, and returns
its files; the client writes them into ``--out`` through
:class:`~dino_rnn.runner.folders.IncrementalFolder` (each file complete, the manifest first), the
metrics JSON last. A point is *finished* when its metrics JSON is there with the same settings
(:func:`~dino_rnn.settings.settings_of`) and the same names file (sha256); a sweep skips finished
points, so an interrupted sweep, run again, resumes. The settings are in the point's path; the
names file is not, so a folder holds one names file's runs, and a sweep on another (other sha256)
is refused before any work. Where each point's files go::

    points/{arch}[-{nonlinearity}]-L{num_layers}-H{hidden}-lr{lr}-e{epochs}-n{max_names|all}[-{setting}{value}...]/
        metrics/{arch}-seed{seed}.json   plots/...png   checkpoints/...pt

(a setting of ``COMPARED`` outside the first seven is named at the end only where it is not its
default: ``-clip1.0``), and the report (:mod:`dino_rnn.report.sweepreport`): ``sweep.md``,
``sweep.csv`` (one row per grid point), ``sweep-pairs.csv``, ``sweep-params.png``,
``sweep-seconds.png``, ``sweep.json`` (the grid, every point and how it went, the command,
versions, times).

Exit status: 0 when every point finished, 1 when one failed or diverged (the others finish).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dino_rnn import settings as P
from dino_rnn.data import read_names, resolve_data_path, split_names
from dino_rnn.files import BENCHMARK_JSON, METRICS, result_paths
from dino_rnn.report.claims import claims_markdown
from dino_rnn.report.sweepreport import _setting_value, parse_pair, point_name, render
from dino_rnn.runner.folders import IncrementalFolder
from dino_rnn.settings import ARCHITECTURES, COMPARED, DEFAULTS, ParameterError, Settings, settings_of

POINT_KEYS = (*COMPARED, "seeds")  # the keys that say which points run: every compared setting, and the seeds
GRID_KEYS = (*POINT_KEYS, "pairs")
# A grid file's top-level ``claims = true`` adds claims.md: the published claims' verdicts (dino_rnn.report.claims).
# The flags that may go with --grid: they replace the file's values (a quick run of a committed grid).
OVERRIDES = ("seeds", "epochs", "max_names")
# The settings a point's folder is always named by, as sweeps have always named them (see folder_name).
IN_FOLDER = ("arch", "nonlinearity", "num_layers", "hidden", "lr", "epochs", "max_names")
POINTS = "points"
SWEEP_JSON = "sweep.json"
# Points per sweep: each is a training run (10 s to minutes of CPU at 40 epochs), so 1000 points is
# hours to days of work, and a typo such as 100 x 100 x 100 would plan a million of them (over a
# gigabyte of memory) before refusing. The environment variable DINO_RNN_MAX_POINTS overrides it.
MAX_POINTS = 1000


# ---------------------------------------------------------------------------
# Points
# ---------------------------------------------------------------------------


def _text(value) -> str:
    """A setting's value in a folder name: ``1.0``, ``0.0004``, ``none``."""
    return "none" if value is None else repr(value) if isinstance(value, float) else str(value)


def folder_name(s: Settings) -> str:
    """``gru-L1-H64-lr0.0004-e40-nall``, ``scratch-none-L1-...``; ``...-nall-clip1.0`` where a setting
    outside :data:`IN_FOLDER` is not its default."""
    nl = f"-{s.nonlinearity}" if s.nonlinearity else ""
    names = "all" if s.max_names is None else s.max_names
    name = f"{s.arch}{nl}-L{s.num_layers}-H{s.hidden}-lr{s.lr!r}-e{s.epochs}-n{names}"
    others = [k for k in COMPARED if k not in IN_FOLDER and getattr(s, k) != DEFAULTS[k]]
    return name + "".join(f"-{k}{_text(getattr(s, k))}" for k in others)


@dataclass(frozen=True)
class Point:
    """One run of the grid: its checked :class:`~dino_rnn.settings.Settings`, the seed among them.

    A setting of :data:`~dino_rnn.settings.COMPARED`, and the seed, read as the point's own
    attribute: ``point.arch``, ``point.num_layers``, ``point.seed``.
    """

    settings: Settings

    def __getattr__(self, name):
        if name in COMPARED or name == "seed":
            return getattr(self.settings, name)
        raise AttributeError(name)

    def compared(self) -> dict:
        """Its :data:`~dino_rnn.settings.COMPARED` settings (what ``settings_of`` reads from its metrics)."""
        return {k: getattr(self.settings, k) for k in COMPARED}

    def key(self, data_sha256: str) -> str:
        """A stable identity: the settings, the seed and the names file's sha256."""
        blob = json.dumps({**self.compared(), "seed": self.seed, "data": data_sha256}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def folder(self) -> str:
        return f"{POINTS}/{folder_name(self.settings)}"

    @property
    def metrics_path(self) -> str:
        return f"{self.folder}/{METRICS}/{self.arch}-seed{self.seed}.json"

    def label(self) -> str:
        return f"{point_name(self.compared())} seed {self.seed}"

    def matches(self, metrics: dict, data_sha256: str) -> bool:
        """Whether ``metrics`` are this point's, on this names file."""
        try:
            return (settings_of(metrics) == self.compared() and metrics["parameters"]["seed"] == self.seed
                    and metrics["data"]["sha256"] == data_sha256 and bool(metrics.get("finished")))
        except (KeyError, TypeError, AttributeError):
            return False


# ---------------------------------------------------------------------------
# The grid: its axes checked, counted, crossed
# ---------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def max_points() -> int:
    """The most points a sweep may run: ``$DINO_RNN_MAX_POINTS``, else :data:`MAX_POINTS`."""
    raw = os.environ.get("DINO_RNN_MAX_POINTS", "").strip()
    if not raw:
        return MAX_POINTS
    n = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else 0
    if n < 1:
        raise ParameterError(f"DINO_RNN_MAX_POINTS must be a whole number of at least 1, not {raw[:40]!r}")
    return n


def _refuse_unknown(keys, where: str = "", extra: str = "") -> None:
    """ParameterError naming the first key that is not a grid key (and the nearest that is)."""
    unknown = sorted(set(keys) - set(GRID_KEYS))
    if unknown:
        near = difflib.get_close_matches(unknown[0], GRID_KEYS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ParameterError(f"{where}unknown grid key {unknown[0]!r}{hint}; use {', '.join(GRID_KEYS)}{extra}")


def _checked(name: str, values: list) -> list:
    """One axis's values, each checked (and typed) by :class:`~dino_rnn.settings.Settings`."""
    if not values:
        raise ParameterError(f"{_flag(name)} is an empty list; give at least one value")
    if name == "arch":
        out = [P.choice("--arch", v, ARCHITECTURES) for v in values]
    else:
        out = []
        for v in values:
            if isinstance(v, str):  # a flag's value, or a file's text ("none"): read as the setting's type
                try:
                    v = _setting_value(name, v)
                except ValueError:
                    raise ParameterError(f"{_flag(name)} {v[:40]!r} is not a valid value of {name.upper()}") from None
            # as the from-scratch cell's setting, so that a setting of that cell only is kept, and checked
            out.append(getattr(Settings(arch="scratch", **{name: v}), name))
    if len(set(out)) != len(out):
        raise ParameterError(f"{_flag(name)} repeats a value ({' '.join(map(_text, out))}); give each once")
    return out


def _axes(grid: dict) -> dict:
    """One grid's checked values, axis by axis (nothing crossed yet); ParameterError for bad input."""
    _refuse_unknown(grid)
    given = {k: v for k, v in grid.items() if v is not None and k != "pairs"}
    defaults = {**{k: [DEFAULTS[k]] for k in COMPARED}, "arch": list(ARCHITECTURES)}
    a = {k: _checked(k, _list(given[k]) if k in given else defaults[k]) for k in COMPARED}
    a["seeds"] = P.parse_seeds(given.get("seeds", 0))
    if "nonlinearity" in given and "scratch" not in a["arch"]:
        raise ParameterError("--nonlinearity applies to the from-scratch cell only; add --arch scratch or drop it")
    if "scratch" in a["arch"] and 1 not in a["num_layers"]:
        raise ParameterError(
            f"the from-scratch cell has one layer, and --num-layers is {' '.join(map(str, a['num_layers']))}; "
            "add 1 to --num-layers or drop scratch from --arch"
        )
    return a


def _axes_of(a: dict, arch: str) -> dict:
    """The values each setting takes for ``arch``: the from-scratch cell has one layer (1 is in every
    grid that has it), and only it has a nonlinearity."""
    out = {k: a[k] for k in COMPARED}
    out["arch"] = [arch]
    if arch == "scratch":
        out["num_layers"] = [1]
    else:
        out["nonlinearity"] = [None]
    return out


def _size(axes: dict) -> int:
    return math.prod(len(v) for v in axes.values())


def _count(a: dict) -> int:
    """How many points :func:`_points` makes of the axes ``a`` (computed, not built)."""
    return sum(_size(_axes_of(a, arch)) for arch in a["arch"]) * len(a["seeds"])


def check_size(axes: list[dict]) -> None:
    """Refuse (ParameterError) grids of more than :func:`max_points` points, before any is built."""
    total, limit = sum(map(_count, axes)), max_points()
    if total <= limit:
        return
    big = max(axes, key=_count)
    sizes = " x ".join(f"{len(big[k])} {k}" for k in POINT_KEYS if len(big[k]) > 1) or "1"
    what = f"the grid has {total} points ({sizes})" if len(axes) == 1 else \
        f"the {len(axes)} grids have up to {total} points (the largest: {sizes})"
    raise ParameterError(f"{what}; a sweep runs at most {limit}, each point a training run "
                         "(set DINO_RNN_MAX_POINTS=N to allow more)")


def _points(a: dict) -> tuple[list[Point], list[str]]:
    """The points of checked axes ``a`` (see :func:`_axes`), and the notes to print."""
    points = []
    for arch in a["arch"]:
        axes = _axes_of(a, arch)
        for values in itertools.product(*axes.values()):
            settings = dict(zip(axes, values))
            points += [Point(Settings(**settings, seed=s)) for s in a["seeds"]]
    notes = []
    if "scratch" in a["arch"] and len(a["num_layers"]) > 1:
        skipped = _size(_axes_of(a, "scratch")) * (len(a["num_layers"]) - 1) * len(a["seeds"])
        notes.append(f"the from-scratch cell has one layer: its {skipped} points with --num-layers "
                     f"{' '.join(str(x) for x in a['num_layers'] if x != 1)} are left out of the grid")
    return points, notes


def expand(grid: dict) -> tuple[list[Point], list[str]]:
    """One grid's points (checked, at most :func:`max_points`) and the notes to print; ParameterError for bad input."""
    a = _axes(grid)
    check_size([a])
    return _points(a)


def _pairs_in(where: str, value) -> list[str]:
    """A grid file's ``pairs``: one text ``"A:B"`` or a list of them; ParameterError otherwise."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(x, str) for x in items):
        raise ParameterError(f'{where}: \'pairs\' must be a text "A:B" or a list of them '
                             f'(pairs = "lstm:gru" or pairs = ["lstm:gru", "rnn:gru"]), not {str(value)[:60]!r}')
    return items


def _read_toml(p: Path, where: str) -> dict:
    import tomllib

    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParameterError(f"{where} does not exist; give a TOML grid file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParameterError(f"{where} cannot be read ({e}); give a UTF-8 TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ParameterError(f"{where} is not valid TOML ({e})") from None


def parse_grid_file(path) -> dict:
    """A TOML grid file as ``{"grids": [...], "pairs": [...], "claims": bool}``; ParameterError for a bad one."""
    p = Path(path).expanduser()
    where = f"--grid {str(p)!r}"
    doc = _read_toml(p, where)
    subs = doc.pop("grid", [{}])
    if not isinstance(subs, list) or not all(isinstance(s, dict) for s in subs) or not subs:
        raise ParameterError(f"{where}: 'grid' must be [[grid]] tables")
    claims = doc.pop("claims", False)
    if not isinstance(claims, bool):
        raise ParameterError(f"{where}: 'claims' must be true or false")
    for table in (doc, *subs):
        _refuse_unknown(table, f"{where}: ", " (and, at the top, claims and [[grid]] tables)")
    if not any(k in t for t in (doc, *subs) for k in POINT_KEYS):
        raise ParameterError(f"{where} defines no grid; give at least one of {', '.join(POINT_KEYS)} "
                             "(at the top or in [[grid]] tables)")
    pairs = _pairs_in(where, doc.pop("pairs", []))
    grids = []
    for s in subs:
        pairs += _pairs_in(where, s.pop("pairs", []))
        grids.append({**doc, **s})
    return {"grids": grids, "pairs": list(dict.fromkeys(pairs)), "claims": claims}


def _parsed_pairs(pairs) -> list:
    parsed = []
    for text in pairs:
        try:
            parsed.append(parse_pair(text))
        except ValueError as e:
            raise ParameterError(f"--pairs: {e}") from None
        for side in parsed[-1]:
            if side.get("arch") is not None and side["arch"] not in ARCHITECTURES:
                raise ParameterError(f"--pairs {text!r}: unknown architecture {side['arch']!r}")
    return parsed


def plan(grids: list[dict], pairs=()) -> tuple[list[Point], list, list[str]]:
    """The union of the grids' points (each once, in order), the parsed pairs and the notes.

    Every grid and pair is checked, and the number of points (:func:`check_size`), before any
    point is built.
    """
    axes = [_axes(g) for g in grids]
    parsed = _parsed_pairs(pairs)
    check_size(axes)
    points, notes = [], []
    for a in axes:
        ps, ns = _points(a)
        notes += ns
        points += ps
    points = list(dict.fromkeys(points))
    return points, (parsed if pairs else default_pairs(points)), notes


def default_pairs(points: list[Point]) -> list:
    """Without --pairs: each two architectures of the grid (in order), and the scratch nonlinearities."""
    archs = list(dict.fromkeys(p.arch for p in points))
    out = [({"arch": a}, {"arch": b}) for i, a in enumerate(archs) for b in archs[i + 1:]
           if "scratch" not in (a, b)]
    nls = list(dict.fromkeys(p.nonlinearity for p in points if p.arch == "scratch"))
    out += [({"arch": "scratch", "nonlinearity": a}, {"arch": "scratch", "nonlinearity": b})
            for i, a in enumerate(nls) for b in nls[i + 1:]]
    return out


# ---------------------------------------------------------------------------
# The task (runs on a worker)
# ---------------------------------------------------------------------------


def run_point(item: dict) -> dict:
    """Train one point (a task for :class:`~dino_rnn.runner.executor.Executor`); returns its files.

    ``item``: ``names`` (the names file's bytes), ``sha256`` (theirs), ``point`` (a
    :class:`Point`). Trains in a temporary folder of its own on one torch thread and returns
    ``{"files": {relative path: bytes}, "metrics": dict}``, the metrics JSON last in ``files``.
    """
    import torch

    from dino_rnn.experiment import Experiment

    torch.set_num_threads(1)
    names, point = item["names"], item["point"]
    if hashlib.sha256(names).hexdigest() != item["sha256"]:
        raise ValueError("the names file's bytes do not match their sha256 (damaged in transfer)")
    with tempfile.TemporaryDirectory(prefix="dino-rnn-point-") as tmp:
        data = Path(tmp) / "names.txt"
        data.write_bytes(names)
        out = Path(tmp) / "out"
        settings = {k: v for k, v in point.compared().items() if k != "arch"}
        exp = Experiment(point.arch, **settings, seed=point.seed, data=data, results_dir=out, device="cpu",
                         progress=False)
        metrics = exp.run()
        paths = result_paths(out, point.arch, point.seed)
        files = {}
        for kind in ("plot", "checkpoint", "metrics"):  # the metrics last: they mark the point finished
            if paths[kind].exists():
                files[f"{point.folder}/{paths[kind].relative_to(out).as_posix()}"] = paths[kind].read_bytes()
    return {"files": files, "metrics": metrics}


# ---------------------------------------------------------------------------
# The sweep (runs on the client)
# ---------------------------------------------------------------------------


@dataclass
class SweepResult:
    out: Path
    points: list[Point]
    trained: list[Point] = field(default_factory=list)
    skipped: list[Point] = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # Point -> message
    diverged: list[Point] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.diverged


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        from importlib.metadata import version

        out["dino_rnn"] = version("dino_rnn")
        out["dask"] = version("dask")
        out["distributed"] = version("distributed")
    except Exception:  # noqa: BLE001
        pass
    return out


def run_sweep(
    out,
    grids: list[dict],
    pairs=(),
    *,
    data=None,
    scheduler: str | None = None,
    jobs: int | None = None,
    command: str = "dino-rnn sweep",
    executor=None,
    log=print,
    claims: bool = False,
) -> SweepResult:
    """Run every point of ``grids`` not already finished in ``out``, then write the report.

    Every check (grid, pairs, names file, ``--out``) happens before any training. ``executor``
    (tests) replaces :class:`~dino_rnn.runner.executor.Executor` with an object of the same interface.
    """
    t0 = time.time()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    points, parsed_pairs, notes = plan(grids, pairs)
    from dino_rnn.runner.executor import check_jobs, check_scheduler

    if scheduler is not None:
        check_scheduler(scheduler)  # its form, at once; whether a scheduler answers, before any training
    else:
        jobs = check_jobs(jobs)
    path = resolve_data_path(data)
    split_names(read_names(path)[0], 0)  # DataError (one line) for an unusable file, before any work
    names_bytes = path.read_bytes()
    sha = hashlib.sha256(names_bytes).hexdigest()
    folder = IncrementalFolder(out)
    folder.check_owned()
    result = SweepResult(out=folder.path, points=points, notes=list(notes))
    for n in notes:
        log(f"note: {n}")
    with folder.lock(command):
        folder.recover()
        folder.check_owned()
        try:
            folder.tidy_listing()
            held = held_points(folder, sha, path)  # refuses a folder of another names file's points
            todo = []
            for p in points:
                m = held.get(p.metrics_path)
                (result.skipped if m is not None and p.matches(m, sha) else todo).append(p)
            log(f"sweep: {len(points)} points, {len(result.skipped)} already finished (skipped), "
                f"{len(todo)} to train -> {folder.path}")
            if todo:
                _train(todo, names_bytes, sha, folder, result, scheduler, jobs, executor, log)
            log("sweep: writing the report (sweep.md, sweep.csv, plots, sweep.json) ...")
            _write_report(folder, points, parsed_pairs, sha, result, command, started, t0, str(path.absolute()), claims)
        finally:
            folder.close()
    result.seconds = time.time() - t0
    return result


def _sha_of(record) -> str | None:
    data = record.get("data") if isinstance(record, dict) else None
    sha = data.get("sha256") if isinstance(data, dict) else None
    return sha if isinstance(sha, str) else None


def held_points(folder, sha: str, data_path: Path) -> dict[str, dict]:
    """The metrics JSONs the sweep's folder lists, by path, all of them on the names file ``sha``.

    A folder holds the runs of one names file: where a point's metrics (or ``sweep.json``)
    record another, ParameterError (one line), so that no finished point is overwritten.
    """
    listed = folder.listed()
    held = {}
    for rel in listed:
        if rel.startswith(f"{POINTS}/") and f"/{METRICS}/" in rel and rel.endswith(".json"):
            m = _load_json(folder.path / rel)
            if isinstance(m, dict):
                held[rel] = m
    report = _load_json(folder.path / SWEEP_JSON) if SWEEP_JSON in listed else None
    other = next((x for x in map(_sha_of, [report, *held.values()]) if x is not None and x != sha), None)
    if other is None:
        return held
    name = report["data"].get("path") if _sha_of(report) == other else None
    held_on, again = (f"names file {name!r}", f"--data {name!r}") if isinstance(name, str) else \
        ("another names file", "the same --data as before")
    raise ParameterError(
        f"--out {str(folder.path)!r} holds runs on {held_on} (sha256 {other[:16]}...), not on --data "
        f"{str(data_path)!r} (sha256 {sha[:16]}...); a sweep's folder holds one names file's runs: "
        f"give another --out, or {again}")


def _train(todo, names_bytes, sha, folder, result, scheduler, jobs, executor, log) -> None:
    from dino_rnn.runner.executor import Executor, removed_after

    tmp = None
    if executor is None:
        # A local cluster's temporary files: in a folder of this run's (a killed run's, the next run removes).
        tmp = None if scheduler else folder.new_marked("tmp")
        executor = Executor(scheduler=scheduler, workers=jobs, log=log, tmpdir=tmp)
    items = [{"names": names_bytes, "sha256": sha, "point": p} for p in todo]
    with removed_after(folder, tmp), executor as ex:
        done = 0
        for i, outcome in ex.run(run_point, items):
            p = todo[i]
            done += 1
            if isinstance(outcome, dict):
                folder.put(outcome["files"])
                m = outcome["metrics"]
                result.trained.append(p)
                if m.get("status") != "ok":
                    result.diverged.append(p)
                    log(f"[{done}/{len(todo)}] {p.label()}: diverged: {m.get('message')}")
                else:
                    log(f"[{done}/{len(todo)}] {p.label()}: test loss {m['test_loss']:.4f}, "
                        f"{m['seconds_per_epoch']:.2f} s/epoch ({m['gradient']})")
            else:
                msg = getattr(outcome, "error", repr(outcome))
                result.failed[p] = msg
                log(f"[{done}/{len(todo)}] {p.label()}: FAILED: {msg}")


def _write_report(folder, points, pairs, sha, result, command, started, t0, data_path, claims=False) -> None:
    metrics, rows = [], []
    for p in points:
        m = _load_json(folder.path / p.metrics_path)
        finished = m is not None and p.matches(m, sha)
        if finished:
            metrics.append(m)
        status = ("failed" if p in result.failed else "diverged" if finished and m.get("status") != "ok"
                  else "ok" if finished else "missing")
        rows.append({**p.compared(), "seed": p.seed, "key": p.key(sha), "metrics": p.metrics_path if finished else None,
                     "status": status, "trained": p in result.trained, "skipped": p in result.skipped,
                     "error": result.failed.get(p), "test_loss": m.get("test_loss") if finished else None,
                     "seconds_per_epoch": m.get("seconds_per_epoch") if finished else None})
    notes = list(result.notes)
    if result.failed:
        notes.append(f"{len(result.failed)} point(s) failed and are not in the tables: "
                     + "; ".join(f"{p.label()}: {e}" for p, e in list(result.failed.items())[:5]))
    files = render(metrics, pairs, title="Sweep", notes=notes)
    if claims:
        files["claims.md"] = ("# The published claims, measured\n\n" + claims_markdown(metrics, load_benchmark())).encode("utf-8")
    summary = {
        "written_by": "dino-rnn sweep",
        "command": command,
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.time() - t0, 1),
        "data": {"path": data_path, "sha256": sha},
        "pairs": [[a, b] for a, b in pairs],
        "counts": {"points": len(points), "trained": len(result.trained), "skipped": len(result.skipped),
                   "failed": len(result.failed), "diverged": len(result.diverged)},
        "notes": notes,
        "points": rows,
        "versions": _versions(),
        "host": {"cpus": os.cpu_count(), "load": _load()},
    }
    files[SWEEP_JSON] = (json.dumps(summary, indent=1, allow_nan=True) + "\n").encode("utf-8")
    folder.put(files)
    result.report = folder.path / "sweep.md"


def load_benchmark() -> dict | None:
    """The committed benchmark's epoch times (``results/benchmark.json``, written by ``dino-rnn bench --out``)."""
    data = _load_json(BENCHMARK_JSON)
    return data.get("models") if isinstance(data, dict) else None


def _load():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _setting_help(name: str) -> str:
    if name == "arch":
        return f"architectures ({', '.join(ARCHITECTURES)}; default all)"
    default = "all" if name == "max_names" else _text(DEFAULTS[name])
    return f"one or more values of the notebooks' {name.upper()} (default {default})"


def add_parser(subparsers):
    p = subparsers.add_parser(
        "sweep",
        help="train a grid of models (architectures x settings x seeds) and report it",
        description="Run a grid of runs (each the published protocol for one seed) on the executor, "
        "skip the points --out already holds, and write sweep.md / sweep.csv / plots / sweep.json there. "
        "The grid is the product of the values given to each setting (every flag from --arch to --"
        f"{COMPARED[-1].replace('_', '-')}: the notebooks' parameters, lower-cased) and the seeds. "
        "--nonlinearity is the from-scratch cell's (tanh, or none: the published linear cell); "
        "--clip none means no clipping, --max-names all every training name.",
    )
    for name in COMPARED:
        p.add_argument(_flag(name), nargs="+", default=None, metavar=name.upper(), help=_setting_help(name))
    p.add_argument("--seeds", nargs="+", default=None, metavar="SEED", help="a list (0 1 2) or a range (0-4); default 0")
    p.add_argument("--grid", default=None, metavar="FILE.toml", help="the grid from a TOML file instead of the flags above "
                   f"({', '.join(map(_flag, OVERRIDES))}, if given, replace the file's)")
    p.add_argument("--pairs", nargs="+", default=None, metavar="A:B",
                   help="paired comparisons, e.g. lstm:gru or scratch,nonlinearity=none:scratch,nonlinearity=tanh "
                   "(default: each two architectures, and the scratch nonlinearities)")
    p.add_argument("--data", default=None, help="a names file (default: $DINO_RNN_DATA or Dino Names)")
    p.add_argument("--out", required=True, help="the sweep's folder; finished points in it are kept and skipped")
    p.add_argument("--scheduler", default=None, metavar="ADDR", help="a Dask scheduler (default: a local cluster)")
    p.add_argument("--jobs", type=int, default=None, help="workers of the local cluster (default: number of cores)")
    return p


def grids_from_args(args) -> tuple[list[dict], list[str], bool]:
    flags = {k: getattr(args, k) for k in POINT_KEYS}
    pairs = list(args.pairs or [])
    if args.grid is not None:
        given = [k for k, v in flags.items() if v is not None and k not in OVERRIDES]
        if given:
            raise ParameterError(f"give the grid either in --grid or in flags, not both ({_flag(given[0])} with --grid)")
        g = parse_grid_file(args.grid)
        over = {k: v for k, v in flags.items() if v is not None}  # --epochs/--max-names/--seeds replace the file's
        return [{**x, **over} for x in g["grids"]], (pairs or g["pairs"]), g["claims"]
    return [{k: v for k, v in flags.items() if v is not None}], pairs, False


def main(args) -> int:
    if args.scheduler and args.jobs is not None:
        raise ParameterError("--jobs sizes the local cluster; with --scheduler the cluster decides")
    grids, pairs, claims = grids_from_args(args)
    command = " ".join(["dino-rnn", *sys.argv[1:]]) if sys.argv[1:2] == ["sweep"] else "dino-rnn sweep"
    r = run_sweep(args.out, grids, pairs, data=args.data, scheduler=args.scheduler, jobs=args.jobs, command=command,
                  claims=claims)
    print(f"sweep: {len(r.trained)} trained, {len(r.skipped)} skipped (already finished), "
          f"{len(r.failed)} failed, {len(r.diverged)} diverged in {r.seconds:.0f} s; report: {r.report}")
    for p, e in r.failed.items():
        print(f"  failed: {p.label()}: {e}", file=sys.stderr)
    return 0 if r.ok else 1

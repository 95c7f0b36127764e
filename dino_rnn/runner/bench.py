"""Benchmark: the project's trainer against a published-style training loop.

``python -m dino_rnn.runner.bench`` (or ``dino-rnn bench``) times one training epoch (1460
one-name AdamW steps, then the validation pass) of every architecture two ways:

* **ours**: :func:`dino_rnn.train.train_epoch` + the step's evaluation
  (:mod:`dino_rnn.fast.steps`, as :func:`dino_rnn.train.fit` makes it), on one intra-op thread,
  as the study runner trains; one more epoch per process times each step's halves
  (gradient, optimizer) to show where the time goes;
* **reference**: a loop written here the way the published notebooks train: each
  name's one-hot input is rebuilt at every step (a Python loop setting elements of a
  zeros tensor), the input is unsqueezed to a batch of one, a fresh hidden state is
  made and moved to the device at every step, the from-scratch model runs a Python
  loop over characters through the published cell (``cat`` of input and hidden, three
  ``nn.Linear``), ``nn.CrossEntropyLoss``, ``optimizer.zero_grad()``, ``.item()`` after
  every step, ``torch.optim.AdamW(lr=4e-4)`` with its defaults, torch's default thread
  count, names in the same order every epoch, validation name by name under
  ``torch.no_grad``.

Each side runs in its own subprocess (``--worker``) so thread settings cannot leak
between them and each reports its own peak memory (``ru_maxrss``). The two sides are
interleaved (ours, reference, ours, reference, ...) and repeated; medians are reported.
``--study`` (repeatable, ``--study 0-4`` for five seeds) also times ``dino-rnn study`` from
the command to the finished report against the reference's 40 epochs of the four models.
The report is printed; ``--out FILE`` also writes it atomically, and its figures as JSON beside
it (``FILE`` with the suffix ``.json``). The committed ones are ``results/benchmark.md`` and
``.json``: ``dino-rnn bench --out results/benchmark.md`` refreshes them on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dino_rnn.settings import ParameterError
from dino_rnn.files import claim_file

TITLE = "# Benchmark: the project's trainer vs a published-style training loop"

ARCHS = ("scratch", "rnn", "lstm", "gru")
STUDY_EPOCHS = 40  # the published protocol
# Issue #10's goals for `dino-rnn study`, as a share of the reference time (by number of seeds).
STUDY_GOALS = {1: 1 / 8, 5: 1 / 2}


# ---------------------------------------------------------------------------
# The published-style reference (written for this benchmark, in the notebooks' manner)
# ---------------------------------------------------------------------------


def _reference_models(vocab_size: int, hidden_size: int = 64):
    """Factories for the four published models, shaped as in the notebooks."""
    import torch
    from torch import nn

    class PublishedScratch(nn.Module):
        # one character per call: cat(input, hidden) -> i2h / i2o, cat(hidden, out) -> o2o
        def __init__(self):
            super().__init__()
            self.hidden_size, self.vocab_size = hidden_size, vocab_size
            self.i2h = nn.Linear(vocab_size + hidden_size, hidden_size)
            self.i2o = nn.Linear(vocab_size + hidden_size, vocab_size)
            self.o2o = nn.Linear(hidden_size + vocab_size, vocab_size)
            self.dropout = nn.Dropout(0.25)

        def forward(self, inp, hidden):
            both = torch.cat((inp, hidden), 1)
            new_hidden = self.i2h(both)
            out = self.o2o(torch.cat((new_hidden, self.i2o(both)), 1))
            return self.dropout(out), new_hidden

        def initHidden(self):
            return torch.zeros(1, self.hidden_size)

    class PublishedRecurrent(nn.Module):
        # nn.RNN / nn.LSTM / nn.GRU over a (T, 1, V) batch of one, Linear read-out, dropout
        def __init__(self, cell):
            super().__init__()
            self.cell, self.hidden_size, self.vocab_size = cell, hidden_size, vocab_size
            self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](vocab_size, hidden_size)
            self.fc = nn.Linear(hidden_size, vocab_size)
            self.dropout = nn.Dropout(0.25)

        def forward(self, inp, hidden):
            out, hidden = self.rnn(inp, hidden)
            return self.dropout(self.fc(out)), hidden

        def initHidden(self):
            if self.cell == "lstm":
                return (torch.zeros(1, 1, self.hidden_size), torch.zeros(1, 1, self.hidden_size))
            return torch.zeros(1, 1, self.hidden_size)

    return {
        "scratch": PublishedScratch,
        "rnn": lambda: PublishedRecurrent("rnn"),
        "lstm": lambda: PublishedRecurrent("lstm"),
        "gru": lambda: PublishedRecurrent("gru"),
    }


def reference_example(word: str, stoi: dict, vocab_size: int, end: str = "."):
    """A name's tensors rebuilt the notebooks' way: element by element, at every step."""
    import torch

    inp = torch.zeros((len(word), vocab_size))
    for i, ch in enumerate(word):
        inp[i][stoi[ch]] = 1
    tgt = torch.LongTensor([stoi[ch] for ch in word[1:]] + [stoi[end]])
    return inp, tgt


def _to_device(h, device):
    return tuple(t.to(device) for t in h) if isinstance(h, tuple) else h.to(device)


def reference_forward(model, arch: str, word: str, stoi: dict, device):
    """(T, V) logits and (T,) targets of one name, computed as the published loops do."""
    import torch

    inp, tgt = reference_example(word, stoi, model.vocab_size)
    if arch == "scratch":
        preds = torch.zeros(len(word), model.vocab_size).to(device)
        hidden = model.initHidden()
        for i in range(len(word)):
            out, hidden = model(inp[i].unsqueeze(0).to(device), hidden.to(device))
            preds[i] = out.squeeze(0)
        return preds, tgt.to(device)
    out, _ = model(inp.unsqueeze(1).to(device), _to_device(model.initHidden(), device))
    return out.view(-1, model.vocab_size), tgt.to(device)


def reference_train_epoch(model, arch, words, stoi, criterion, optimizer, device) -> float:
    model.train()
    total = 0.0
    for word in words:
        optimizer.zero_grad()
        logits, tgt = reference_forward(model, arch, word, stoi, device)
        loss = criterion(logits, tgt)
        total += loss.item()
        loss.backward()
        optimizer.step()
    return total / len(words)


def reference_evaluate(model, arch, words, stoi, criterion, device) -> float:
    import torch

    model.eval()
    total = 0.0
    for word in words:
        with torch.no_grad():
            logits, tgt = reference_forward(model, arch, word, stoi, device)
            total += criterion(logits, tgt).item()
    return total / len(words)


# ---------------------------------------------------------------------------
# One timed side, in its own process
# ---------------------------------------------------------------------------


def run_worker(side: str, arch: str, epochs: int, data: str | None, seed: int = 0) -> dict:
    """Train ``arch`` for ``epochs`` epochs one way; per-epoch seconds and the losses."""
    import torch
    from torch import nn

    from dino_rnn.data import Vocab, encode_names, load_names, split_names
    from dino_rnn.models import build_model
    from dino_rnn.train import make_step as torch_step
    from dino_rnn.train import make_optimizer, pairs_of, set_seed, train_epoch

    names = load_names(data)
    vocab = Vocab(names)
    train, valid, _ = split_names(names, seed=seed)
    set_seed(seed)
    seconds, losses = [], []
    if side == "ours":
        torch.set_num_threads(1)
        tr, va = pairs_of(encode_names(train, vocab)), pairs_of(encode_names(valid, vocab))
        model = build_model(arch, len(vocab))
        step = torch_step(model, make_optimizer(model, 4e-4))
        train_epoch(step, tr[:5])  # untimed: loads the compiled kernels (compiled once per install, not per run)
        for _ in range(epochs):
            t0 = time.perf_counter()
            tl = train_epoch(step, tr)
            vl = step.evaluate(va)
            seconds.append(time.perf_counter() - t0)
            losses.append((tl, vl))
        profile = profile_epoch(step, tr, va)
    elif side == "reference":
        profile = None
        device = torch.device("cpu")
        model = _reference_models(len(vocab))[arch]().to(device)
        opt = torch.optim.AdamW(model.parameters(), 4e-4)
        criterion = nn.CrossEntropyLoss()
        for _ in range(epochs):
            t0 = time.perf_counter()
            tl = reference_train_epoch(model, arch, train, vocab.stoi, criterion, opt, device)
            vl = reference_evaluate(model, arch, valid, vocab.stoi, criterion, device)
            seconds.append(time.perf_counter() - t0)
            losses.append((tl, vl))
    else:
        raise ValueError(side)
    return {
        "side": side,
        "arch": arch,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "losses": losses,
        "n_train": len(train),
        "n_valid": len(valid),
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "profile": profile,
    }


def profile_epoch(step, train, valid) -> dict:
    """One more epoch, with each step's two halves timed: where a step's time goes.

    ``gradient``: ``step.loss_and_grad`` (forward, loss, backward); ``optimizer``:
    ``step.update`` (the AdamW step); ``bookkeeping``: the rest of the epoch per step (the
    loop, the loss sum, mode switches, the validation pass, and these timers themselves).
    """
    import torch

    clock = time.perf_counter
    grad = update = 0.0
    t0 = clock()
    step.train()
    total = 0.0
    for x, y in train:
        a = clock()
        total += step.loss_and_grad(x, y)
        b = clock()
        with torch.no_grad():
            step.update()
        c = clock()
        grad += b - a
        update += c - b
    step.evaluate(valid)
    epoch = clock() - t0
    n = len(train)
    return {
        "gradient": step.gradient,
        "gradient_us": grad / n * 1e6,
        "optimizer_us": update / n * 1e6,
        "bookkeeping_us": (epoch - grad - update) / n * 1e6,
        "epoch_s": epoch,
    }


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


def _worker_cmd(side: str, arch: str, epochs: int, data: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "dino_rnn.runner.bench", "--worker", side, "--arch", arch, "--epochs-timed", str(epochs)]
    if data:
        cmd += ["--data", data]
    return cmd


def _parse_worker_output(stdout: str, cmd: list[str]) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"benchmark worker printed no result: {' '.join(cmd)}")


def _run(side: str, arch: str, epochs: int, data: str | None) -> dict:
    cmd = _worker_cmd(side, arch, epochs, data)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    return _parse_worker_output(proc.stdout, cmd)


def _run_concurrently(archs, epochs: int, data: str | None, jobs: int) -> tuple[list[dict], float]:
    """Our trainer for every arch, ``jobs`` processes at a time (as the study runner does)."""
    pending, running, results = list(archs), [], []
    t0 = time.perf_counter()
    while pending or running:
        while pending and len(running) < jobs:
            cmd = _worker_cmd("ours", pending.pop(0), epochs, data)
            running.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())))
        cmd, proc = running.pop(0)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark worker failed ({' '.join(cmd)}):\n{err[-2000:]}")
        results.append(_parse_worker_output(out, cmd))
    return results, time.perf_counter() - t0


def _child_env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _median_profile(profiles: list[dict]) -> dict | None:
    profiles = [p for p in profiles if p]
    if not profiles:
        return None
    out = {k: statistics.median(p[k] for p in profiles) for k in ("gradient_us", "optimizer_us", "bookkeeping_us", "epoch_s")}
    out["gradient"] = profiles[0]["gradient"]
    return out


def schedule_makespan(durations: list[float], workers: int) -> float:
    """Longest-first greedy schedule of independent jobs on ``workers``: the finishing time."""
    loads = [0.0] * max(1, workers)
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads)


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def build_report(rows: dict, concurrent: list[dict], concurrent_wall: float, args, elapsed: float,
                 studies: list[dict] = ()) -> str:
    """The benchmark's Markdown report: how it was measured, the epoch table, the whole-study
    projection, where a step's time goes, and (``studies``) the timed studies."""
    lines = _header(rows, args, elapsed) + _epoch_table(rows)
    lines += _projection_section(rows, concurrent, concurrent_wall, args)
    lines += _profile_section(rows)
    lines += _study_section(rows, studies, args)
    return "\n".join(lines)


def _header(rows: dict, args, elapsed: float) -> list[str]:
    import torch

    first = rows[next(iter(rows))]
    busy = max(args.load_start, _load()) > 0.7
    return [
        TITLE,
        "",
        f"Written by `python -m dino_rnn.runner.bench` ({time.strftime('%Y-%m-%d %H:%M:%S')}); "
        f"torch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{platform.machine()}. The whole benchmark took {elapsed:.0f} s. System load average "
        f"(1 min) at start / end: {args.load_start:.2f} / {_load():.2f}"
        + (
            " -- the machine was busy with other work; default-thread reference runs suffer most "
            "from that, so treat the ratios with care and re-run on an idle machine."
            if busy
            else "."
        ),
        "",
        f"One epoch = {first['n_train']} one-name AdamW steps + the validation pass over "
        f"{first['n_valid']} names. Each side ran in its own process, interleaved "
        f"(ours, reference, ours, reference, ...) {args.repeats} times, {args.epochs_timed} timed "
        "epoch(s) per process; figures are medians over all timed epochs. "
        "\"Ours\" = `train_epoch` + the step's `evaluate` on 1 intra-op thread; \"reference\" = the loop in "
        "`dino_rnn/runner/bench.py` written the way the published notebooks train (tensors rebuilt per "
        "step, per-character loop for the from-scratch cell, `.item()` per step, torch's default "
        "thread count).",
        "",
    ]


def _epoch_table(rows: dict) -> list[str]:
    from dino_rnn.models import LABELS

    lines = [
        "| model | reference s/epoch | ours s/epoch | speed-up (ratio of medians) | lowest paired ratio | threads ref / ours | peak RSS ref / ours (MiB) |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for a, r in rows.items():
        lines.append(
            f"| {LABELS.get(a, a)} | {_fmt(r['ref'])} | {_fmt(r['ours'])} | **{r['ref'] / r['ours']:.1f}x** | "
            f"{min(r['pairs']):.1f}x | {r['threads_ref']} / {r['threads_ours']} | "
            f"{r['rss_ref']:.0f} / {r['rss_ours']:.0f} |"
        )
    return lines


def _projection_section(rows: dict, concurrent: list[dict], concurrent_wall: float, args) -> list[str]:
    archs = list(rows)
    ref_total = sum(STUDY_EPOCHS * rows[a]["ref"] for a in archs)
    ours_seq = sum(STUDY_EPOCHS * rows[a]["ours"] for a in archs)
    conc = {c["arch"]: statistics.median(c["seconds"]) for c in concurrent}
    ours_par = schedule_makespan([STUDY_EPOCHS * conc[a] for a in archs], args.jobs)
    return [
        "",
        f"## Whole study projection ({STUDY_EPOCHS} epochs x {len(archs)} models)",
        "",
        f"- Reference, the models one after another as the published notebooks ran: "
        f"sum of {STUDY_EPOCHS} x reference s/epoch = **{ref_total:.0f} s**.",
        f"- Ours, one after another (no parallelism credit): sum of {STUDY_EPOCHS} x ours s/epoch = "
        f"**{ours_seq:.0f} s** ({ref_total / ours_seq:.1f}x faster).",
        f"- Ours on `--jobs {args.jobs}` worker processes, as the study runner schedules notebooks: "
        f"the {len(archs)} models were also run {args.jobs} at a time (measured epoch seconds under that "
        f"contention: {', '.join(f'{a} {conc[a]:.2f}' for a in archs)}; wall {concurrent_wall:.1f} s incl. "
        f"process start-up), and {STUDY_EPOCHS} x those epochs were scheduled longest-first on "
        f"{args.jobs} workers: critical path **{ours_par:.0f} s** "
        f"(**{ref_total / ours_par:.1f}x** faster than the reference).",
        "",
        "Projections multiply a measured epoch time by 40; they leave out process and notebook "
        "start-up, data loading and the test-set pass (each well under a second here), and the "
        "best-state copies, on both sides alike.",
        "",
        "Peak RSS is `ru_maxrss` of the training process (torch and the data loaded included).",
        "",
    ]


def _profile_section(rows: dict) -> list[str]:
    lines = [
        "## Where a step's time goes (ours)",
        "",
        "One more epoch per process, each step's two halves timed (medians over the processes): "
        "*gradient* = forward, loss and backward (`step.loss_and_grad`), *optimizer* = the AdamW "
        "update (`step.update`), *bookkeeping* = the rest of the epoch per step (the loop, the loss "
        "sum, the validation pass, the timers).",
        "",
        "| model | gradient | µs / step: gradient | optimizer | bookkeeping | total | shares |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    from dino_rnn.models import LABELS

    for a, r in rows.items():
        p = r.get("profile")
        if not p:
            continue
        total = p["epoch_s"] / r["n_train"] * 1e6  # the profiled epoch, per step
        shares = " / ".join(f"{100 * p[k] / total:.0f}%" for k in ("gradient_us", "optimizer_us", "bookkeeping_us"))
        lines.append(
            f"| {LABELS.get(a, a)} | {p['gradient']} | {p['gradient_us']:.0f} | {p['optimizer_us']:.0f} | "
            f"{p['bookkeeping_us']:.0f} | {total:.0f} | {shares} |"
        )
    return lines + [""]


def _study_section(rows: dict, studies: list[dict], args) -> list[str]:
    if not studies:
        return []
    lines = ["## The study against the reference", ""]
    if set(rows) != set(ARCHS):
        return lines + ["(The reference time needs all four models benchmarked; run without `--archs`.)", ""]
    ref_total = sum(STUDY_EPOCHS * rows[a]["ref"] for a in ARCHS)
    lines += [
        f"Reference: the published-style loop's {STUDY_EPOCHS} epochs of the four Dino Names models, one after "
        f"another, {STUDY_EPOCHS} x the reference s/epoch above, summed: **{ref_total:.0f} s**. Each study below "
        "is `dino-rnn study` run by this benchmark into a fresh folder, timed from the command to the finished "
        "report (every notebook, HTML export, the comparison), on "
        f"`--jobs {args.jobs}` worker processes.",
        "",
        "| study | wall (s) | wall / reference | goal | met | notebooks ok | longest notebook |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for st in studies:
        goal = STUDY_GOALS.get(st["n_seeds"])
        ratio = st["wall"] / ref_total
        met = "—" if goal is None else ("yes" if ratio <= goal else "no")
        longest = max(st["notebooks"].items(), key=lambda kv: kv[1], default=("—", 0.0))
        lines.append(
            f"| `--seeds {st['seeds']}` ({st['n_seeds']} seed{'s' * (st['n_seeds'] > 1)}) | {st['wall']:.0f} | "
            f"1/{ref_total / st['wall']:.1f} ({ratio:.2f}) | "
            f"{'—' if goal is None else f'at most {goal:g}'} | {met} | {st['ok']} | "
            f"{longest[0]} ({longest[1]:.0f} s) |"
        )
    lines += ["", "Each notebook's longest time (seconds, over seeds), from the study's `study.json`:", ""]
    names = sorted({nb for st in studies for nb in st["notebooks"]})
    lines += ["| notebook | " + " | ".join(f"`--seeds {st['seeds']}`" for st in studies) + " |",
              "|---|" + "---:|" * len(studies)]
    for nb in names:
        lines.append(f"| {nb} | " + " | ".join(f"{st['notebooks'].get(nb, float('nan')):.0f}" for st in studies) + " |")
    return lines + [""]


def time_study(seeds: str, data: str | None, jobs: int) -> dict:
    """``dino-rnn study --seeds SEEDS`` into a fresh folder, timed from the command to its exit."""
    import shutil

    from dino_rnn.settings import parse_seeds

    n_seeds = len(parse_seeds(seeds.split()))
    work = Path(tempfile.mkdtemp(prefix="dino-rnn-bench-study-"))
    out = work / "results"
    cmd = [sys.executable, "-m", "dino_rnn", "study", "--seeds", *seeds.split(), "--out", str(out), "--jobs", str(jobs)]
    if data:
        cmd += ["--data", data]
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
        wall = time.perf_counter() - t0
        if not (out / "study.json").exists():
            raise RuntimeError(f"the timed study failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
        summary = json.loads((out / "study.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notebooks: dict[str, float] = {}
    for j in summary["jobs"]:
        notebooks[j["notebook"]] = max(notebooks.get(j["notebook"], 0.0), j["seconds"])
    ok = sum(j["status"] == "ok" for j in summary["jobs"])
    return {"seeds": seeds, "n_seeds": n_seeds, "wall": wall, "returncode": proc.returncode,
            "ok": f"{ok} of {len(summary['jobs'])}", "notebooks": notebooks}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _written_here(path: Path) -> bool:
    """Is ``path`` a report (or its JSON) this benchmark wrote, which a new run may replace?"""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".json":
        try:
            return set(json.loads(text)) == {"written", "load", "cpus", "seconds", "models", "studies"}
        except (ValueError, TypeError):
            return False
    return text.startswith(TITLE + "\n")


def _claim_out(args) -> bool:
    """``--out`` and the ``.json`` beside it checked before any work (see :func:`claim_file`)."""
    try:
        args.out = claim_file(args.out, "--out", _written_here)
        claim_file(args.out.with_suffix(".json"), "--out's .json", _written_here)
    except ParameterError as e:
        print(f"dino-rnn bench: error: {e}", file=sys.stderr)
        return False
    return True


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dino-rnn bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs-timed", type=int, default=2, help="timed epochs per worker process (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved ours/reference process pairs per model (default 3)")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS, help="the models to time (default all four)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes for the study projection (default: CPUs)")
    p.add_argument("--out", default=None,
                   help="also write the report to this file (the committed one: results/benchmark.md)")
    p.add_argument("--data", default=None, help="names file (default: $DINO_RNN_DATA or the downloaded Dino Names)")
    p.add_argument("--study", action="append", nargs="?", const="0", metavar="SEEDS",
                   help="also time 'dino-rnn study --seeds SEEDS' (default 0; e.g. --study --study 0-4) "
                        "against the reference's 40 epochs of the four models")
    p.add_argument("--worker", choices=("ours", "reference"), help=argparse.SUPPRESS)
    p.add_argument("--arch", choices=ARCHS, help=argparse.SUPPRESS)
    return p


def _time_model(arch: str, args) -> dict:
    """``arch`` timed both ways, ``args.repeats`` interleaved pairs of processes: the report's row."""
    ours, ref = [], []
    for k in range(args.repeats):
        ours.append(_run("ours", arch, args.epochs_timed, args.data))
        ref.append(_run("reference", arch, args.epochs_timed, args.data))
        print(
            f"{arch} {k + 1}/{args.repeats}: ours {statistics.median(ours[-1]['seconds']):.2f} s/epoch, "
            f"reference {statistics.median(ref[-1]['seconds']):.2f} s/epoch",
            file=sys.stderr, flush=True,
        )
    return {
        "ours": statistics.median([s for r in ours for s in r["seconds"]]),
        "ref": statistics.median([s for r in ref for s in r["seconds"]]),
        "pairs": [statistics.median(b["seconds"]) / statistics.median(a["seconds"]) for a, b in zip(ours, ref)],
        "threads_ours": ours[0]["threads"],
        "threads_ref": ref[0]["threads"],
        "rss_ours": max(r["maxrss_mib"] for r in ours),
        "rss_ref": max(r["maxrss_mib"] for r in ref),
        "n_train": ours[0]["n_train"],
        "n_valid": ours[0]["n_valid"],
        "profile": _median_profile([r["profile"] for r in ours]),
    }


def _write_out(path: Path, report: str, rows: dict, studies: list[dict], load_start: float, seconds: float) -> None:
    """The report at ``path``, and its figures as JSON beside it (the claims' verdicts read the
    published-style loop's epoch times)."""
    write_atomic(path, report)
    write_atomic(path.with_suffix(".json"), json.dumps({
        "written": time.strftime("%Y-%m-%d %H:%M:%S"), "load": [load_start, _load()],
        "cpus": os.cpu_count(), "seconds": round(seconds, 1),
        "models": {a: {"reference": r["ref"], "ours": r["ours"], "pairs": r["pairs"]} for a, r in rows.items()},
        "studies": studies,
    }, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.epochs_timed < 1 or args.repeats < 1 or args.jobs < 1:
        p.error("--epochs-timed, --repeats and --jobs must be at least 1")
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.arch, args.epochs_timed, args.data)), flush=True)
        return 0
    if args.out and not _claim_out(args):
        return 2
    t0 = time.perf_counter()
    args.load_start = _load()
    rows = {arch: _time_model(arch, args) for arch in args.archs}
    print(f"timing the {len(args.archs)} models {args.jobs} at a time ...", file=sys.stderr, flush=True)
    concurrent, wall = _run_concurrently(args.archs, args.epochs_timed, args.data, args.jobs)
    studies = []
    for seeds in args.study or []:
        print(f"timing dino-rnn study --seeds {seeds} ...", file=sys.stderr, flush=True)
        studies.append(time_study(seeds, args.data, args.jobs))
    report = build_report(rows, concurrent, wall, args, time.perf_counter() - t0, studies)
    if args.out:
        _write_out(Path(args.out), report, rows, studies, args.load_start, time.perf_counter() - t0)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

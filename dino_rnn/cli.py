"""The ``dino-rnn`` command: ``study`` (every notebook, then the comparison and its HTML report),
``report`` (the HTML again), ``sweep`` (a grid of runs), ``exercises`` (the teaching edition's
notebooks), ``sample`` (names from a saved model) and ``bench`` (the speed benchmark).

Bad input is refused before any work with one line and exit status 2; a study in which
a notebook failed or a model diverged exits with status 1. ``--version`` and ``--help`` load no
torch (each command imports what it needs when it runs).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import signal
import sys
import threading

from dino_rnn.data import DataError
from dino_rnn.settings import ParameterError


def _study_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "study",
        help="train every model through its notebook, then write the comparison",
        description="Run every notebook through papermill (once per seed), export HTML reports, "
        "and write comparison.md / comparison.csv and the loss plots into --out.",
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs per model (default 40; 1 with --smoke)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seeds", nargs="+", metavar="SEED", help="seeds: a list (0 1 2) or a range (0-4); default 0")
    g.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds SEED)")
    p.add_argument("--max-names", type=int, default=None, help="train on the first N training names only (smoke runs)")
    p.add_argument("--data", default=None, help="a names file, one name per line (default: $DINO_RNN_DATA or Dino Names)")
    o = p.add_mutually_exclusive_group()
    o.add_argument("--out", default=None,
                   help="results folder (default: results/study); a study replaces only a folder it wrote")
    o.add_argument("--reference", action="store_true",
                   help="regenerate the committed reference in results/reference (default seeds 0-4)")
    p.add_argument("--jobs", type=int, default=None,
                   help="workers of the local cluster: notebooks run in parallel (default: number of cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the notebooks on the Dask cluster whose scheduler is at ADDRESS (e.g. tcp://host:8786) "
                   "instead of a local cluster; its workers need the same installed environment, no shared folder")
    p.add_argument("--smoke", action="store_true", help="a quick run with tiny parameters, to check everything works")
    p.add_argument("--fresh-kernels", action="store_true",
                   help="start a new Jupyter kernel for every notebook, as plain papermill does (default: each worker "
                   "reuses its kernels, reset between notebooks, which saves ~5 s per notebook; the numbers are the same)")
    p.add_argument("--cell-timeout", type=float, default=None, metavar="SECONDS",
                   help="fail a notebook whose cell runs longer than this (default 1800)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no line per notebook: only the summary at the end (for CI logs)")
    return p


def _report_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="rebuild the HTML reports of a results folder (html/index.html and every notebook's), training nothing",
        description="Rebuild RESULTS/html from the files a study left there: index.html (the study at a glance) "
        "and every executed notebook as two reports, without and with its code. Writes only RESULTS/html "
        "(and lists its files in RESULTS/.dino-rnn.json).",
    )
    p.add_argument("results", nargs="?", default=None, metavar="RESULTS",
                   help="a results folder written by dino-rnn study (default: results/study)")
    p.add_argument("--reference", action="store_true",
                   help="rebuild the report of the committed reference, results/reference")
    p.add_argument("--screenshot", metavar="PNG", default=None,
                   help="also open index.html in headless Chromium and save a screenshot of its top here")
    return p


def _exercises_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "exercises",
        help="write the exercise notebooks for students (every solution a stub), or with --solutions the solutions",
        description="Write 01_rnn_from_scratch.ipynb and 05_anbn_lab.ipynb into --out: the student version, where "
        "the body of every exercise is a stub that stops the notebook with the exercise's name, or with --solutions "
        "the notebooks with the solutions filled in. Replaces no file.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write into (created if missing)")
    p.add_argument("--solutions", action="store_true", help="write the solutions instead of the student version")
    return p


def _sample_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sample",
        help="print names from a saved model (a notebook's checkpoint), training nothing",
        description="Print names made up by a model a notebook saved: CHECKPOINT is a .pt file (notebooks 01-04, "
        "in RESULTS/checkpoints/) or a .npz file (notebook 06). Each name is built one character at a time, each "
        "drawn from the model's probabilities for the next character, until the end marker. --beam searches for the "
        "most probable names instead of drawing. The same --seed gives the same names.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint a notebook wrote (.pt or .npz)")
    p.add_argument("--prefix", default="", metavar="TEXT",
                   help="every name begins with TEXT (default: each name starts with a random letter)")
    p.add_argument("--temperature", default="1", metavar="T",
                   help="below 1 the model's favourite characters win more often (safer names), above 1 less often "
                   "(stranger names); 0 always takes the most likely one (greedy) (default 1)")
    p.add_argument("--top-k", default=None, metavar="K", help="draw only among the K most likely next characters")
    p.add_argument("--top-p", default=None, metavar="P",
                   help="draw only among the most likely next characters whose probabilities add up to P "
                   "(nucleus sampling; 0 < P <= 1)")
    p.add_argument("--beam", default=None, metavar="W",
                   help="instead of drawing, search for the most probable complete names, keeping the W best "
                   "beginnings at each step (beam search; 1 is greedy); prints each name's log-probability")
    p.add_argument("--n", default="10", metavar="N", help="how many names (default 10; with --beam at most W)")
    p.add_argument("--seed", default="0", metavar="S", help="the same seed gives the same names (default 0)")
    p.add_argument("--max-length", default="40", metavar="L", help="cut a name at L characters (default 40)")
    return p


SAMPLE_OPTIONS = {"prefix": "--prefix", "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p",
                  "width": "--beam", "n": "--n", "seed": "--seed", "max_length": "--max-length"}


def _number(text, option: str, kind):
    """An option's value as ``kind`` (int or float), or a one-line :class:`ParameterError` naming it."""
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ParameterError(f"{option} must be {what}, not {text!r}") from None


def _sample_options(args) -> dict:
    """The ``sample`` command's options, converted and checked (before the checkpoint is read)."""
    from dino_rnn.sample import check_options

    o = {k: _number(getattr(args, a), SAMPLE_OPTIONS[k], kind) for k, a, kind in
         (("temperature", "temperature", float), ("top_k", "top_k", int), ("top_p", "top_p", float),
          ("width", "beam", int), ("n", "n", int), ("seed", "seed", int), ("max_length", "max_length", int))}
    if o["width"] is not None and (o["top_k"] is not None or o["top_p"] is not None or args.temperature != "1"):
        raise ParameterError("--beam searches for the most probable names; it takes no --temperature, --top-k or --top-p")
    if not 0 <= o["seed"] < 2**63:
        raise ParameterError(f"--seed must be between 0 and 2**63 - 1, not {o['seed']}")
    check_options(prefix=args.prefix, temperature=o["temperature"], top_k=o["top_k"], top_p=o["top_p"], n=o["n"],
                  width=1 if o["width"] is None else o["width"], max_length=o["max_length"], spelled=SAMPLE_OPTIONS)
    return o


def load_any_checkpoint(path):
    """The model (NumPy nets through :class:`~dino_rnn.lab.TorchView`) and vocabulary of a
    ``.pt`` or ``.npz`` checkpoint; a warning (a checkpoint without its recorded checksum) is one
    line on stderr."""
    import warnings
    from pathlib import Path

    path = Path(path)
    if path.suffix not in (".pt", ".npz"):
        raise DataError(f"checkpoint {path}: not a .pt (notebooks 01-04) or .npz (notebook 06) checkpoint")
    if path.exists() and not path.is_file():
        raise DataError(f"checkpoint {path} is not a file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if path.suffix == ".pt":
            from dino_rnn.experiment import load_checkpoint

            model, vocab = load_checkpoint(path)
        else:
            from dino_rnn.lab import TorchView, load_numpy_checkpoint

            net, vocab = load_numpy_checkpoint(path)
            model = TorchView(net)
    for w in caught:
        print(f"dino-rnn: warning: {w.message}", file=sys.stderr)
    return model, vocab


def sample(args) -> int:
    from dino_rnn.sample import beam_search, check_options
    from dino_rnn.sample import sample as draw

    o = _sample_options(args)
    model, vocab = load_any_checkpoint(args.checkpoint)
    check_options(vocab, prefix=args.prefix, spelled=SAMPLE_OPTIONS)
    if o["width"] is not None:
        for beam in beam_search(model, vocab, prefix=args.prefix, width=o["width"], max_length=o["max_length"])[:o["n"]]:
            print(f"{beam.name}\t{beam.logprob:.3f}")
        return 0
    for name in draw(model, vocab, o["n"], prefix=args.prefix, temperature=o["temperature"], top_k=o["top_k"],
                     top_p=o["top_p"], seed=o["seed"], max_length=o["max_length"]):
        print(name)
    return 0


def exercises(args) -> int:
    from dino_rnn.exercises.notebooks import write_exercises

    for path in write_exercises(args.out, solutions=args.solutions):
        print(path)
    kind = "solutions" if args.solutions else "student notebooks (run them to see the first exercise's stub)"
    print(f"exercises: {kind} in {args.out}")
    return 0


def report(args) -> int:
    from dino_rnn.files import REFERENCE, STUDY
    from dino_rnn.runner.folders import rebuild

    if args.reference and args.results is not None:
        raise ParameterError("give RESULTS or --reference, not both (--reference is results/reference)")
    results = REFERENCE if args.reference else (args.results if args.results is not None else STUDY)
    command = " ".join(["dino-rnn", *sys.argv[1:]]) if sys.argv[1:2] == ["report"] else "dino-rnn report"
    index = rebuild(results, command=command, reference=args.reference)
    print(f"report: {index}")
    if args.screenshot:
        from dino_rnn.report.browser import BrowserUnavailable, screenshot

        try:
            page = screenshot(index, args.screenshot)
        except BrowserUnavailable as e:
            print(f"dino-rnn: error: no screenshot: {e}", file=sys.stderr)
            return 2
        print(f"screenshot: {args.screenshot} ({page.width} px wide)")
    return 0


def study(args) -> int:
    from dino_rnn.runner.study import CELL_TIMEOUT, SMOKE, print_summary, run_study

    if args.scheduler is not None and args.jobs is not None:
        raise ParameterError("--jobs sizes the local cluster; with --scheduler the cluster's own workers run the "
                             "notebooks: drop --jobs (start more workers to run more at once)")
    if args.scheduler is not None:
        from dino_rnn.runner.executor import check_scheduler

        check_scheduler(args.scheduler)  # its form, at once; whether a scheduler answers, before any work

    epochs = args.epochs if args.epochs is not None else (SMOKE["epochs"] if args.smoke else 40)
    max_names = args.max_names if args.max_names is not None else (SMOKE["max_names"] if args.smoke else None)
    default_seeds = "0-4" if args.reference else 0
    seeds = args.seeds if args.seeds is not None else [args.seed if args.seed is not None else default_seeds]
    result = run_study(
        args.out,
        reference=args.reference,
        cell_timeout=args.cell_timeout if args.cell_timeout is not None else CELL_TIMEOUT,
        command=" ".join(["dino-rnn", *sys.argv[1:]]) if sys.argv[1:2] == ["study"] else "dino-rnn study",
        epochs=epochs,
        seeds=seeds,
        max_names=max_names,
        data=args.data,
        jobs=args.jobs,
        scheduler=args.scheduler,
        extra=SMOKE["extra"] if args.smoke else None,
        quiet=args.quiet,
        fresh_kernels=args.fresh_kernels,
    )
    print_summary(result)
    return 0 if result.ok else 1


def _kept(args) -> str:
    """What an interrupted or failed run left as it was."""
    if args.command == "sweep":
        return f"the points finished in {args.out} are kept, run again to resume"
    if args.command == "exercises":
        return f"nothing in {args.out} was replaced"
    if args.command == "sample":
        return "nothing was written"
    if args.command == "report":
        where = "results/reference" if args.reference else (args.results or "results/study")
    else:
        where = "results/reference" if args.reference else (args.out or "results/study")
    return f"the previous results in {where} are untouched"


def _terminate(signum, frame):
    raise KeyboardInterrupt


def version() -> str:
    """The installed version (``importlib.metadata``), else the package's own ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("dino-rnn")
    except PackageNotFoundError:  # run from a clone that is not installed
        from dino_rnn import __version__

        return __version__


DESCRIPTION = ("Train and compare character-level recurrent language models (a from-scratch RNN cell, "
               "nn.RNN, nn.LSTM and nn.GRU) on Dino Names, each through its notebook.")
EPILOG = "Run 'dino-rnn COMMAND --help' for a command's options."


def build_parser() -> argparse.ArgumentParser:
    """The ``dino-rnn`` parser: every command listed, each with one line of plain words."""
    from dino_rnn.runner.sweep import add_parser as sweep_parser

    parser = argparse.ArgumentParser(prog="dino-rnn", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"dino-rnn {version()}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    _study_parser(sub)
    _report_parser(sub)
    sweep_parser(sub)
    _exercises_parser(sub)
    _sample_parser(sub)
    sub.add_parser("bench", help="time the trainer against a published-style training loop (the speed benchmark)",
                   add_help=False)
    return parser


def main(argv=None) -> int:
    """The command; ``argv`` None: this process's own command line."""
    if argv is None:
        # When this process exits, after the exit handlers the command registers, its objects
        # leave the collector's generations (``gc.freeze``), so the interpreter's exit does not
        # walk them (after a study: 0.15-0.22 instead of 0.92 s; docs/speed.md), as a local
        # cluster's workers do (dino_rnn.runner.executor). A caller's main([...]) freezes nothing.
        atexit.register(gc.freeze)
        return _main(sys.argv[1:])
    return _main(list(argv))


def _main(argv: list[str]) -> int:
    if argv[:1] == ["bench"]:  # its own parser (it also runs as python -m dino_rnn.runner.bench)
        from dino_rnn.runner.bench import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    # A kill (SIGTERM) unwinds like Ctrl-C: the run's staging folder is removed and the
    # previous results stay as they were.
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "sweep":
            from dino_rnn.runner.sweep import main as sweep_main

            return sweep_main(args)
        commands = {"report": report, "study": study, "exercises": exercises, "sample": sample}
        return commands[args.command](args)
    except (ParameterError, DataError) as e:
        print(f"dino-rnn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dino-rnn: interrupted; {_kept(args)}", file=sys.stderr)
        return 130
    except OSError as e:  # after work started: disk full, permissions, a folder gone
        where = f" ({e.filename})" if e.filename else ""
        print(f"dino-rnn: error: {e.strerror or e}{where}; {_kept(args)}", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())

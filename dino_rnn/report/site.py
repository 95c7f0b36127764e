"""The study's HTML: one page that gathers the whole study, and every notebook as two reports.

In a results folder, ``html/`` holds::

    index.html                          the study at a glance (start here)
    comparison.html, comparison.code.html
    seed{S}/{notebook}.html             each model notebook as it ran for seed S: the reader's
    seed{S}/{notebook}.code.html        version (no code) and the learner's (with the code)

Everything is built from the files a study leaves (``metrics/``, ``anbn/``, ``study.json``,
``executed/``), so :func:`rebuild` (``dino-rnn report``) redoes it without training anything.

Every page opens straight from disk and fetches nothing: the stylesheet and every image are
inline, math is MathML (converted here by latex2mathml, where nbconvert would load MathJax
from the network), widget outputs are dropped (they need a script from the network to draw),
and there is no script at all. Links between notebooks point at their HTML reports. No
machine path reaches a page: the staging folder a notebook ran in, the results folder, the
project folder and the home folder are shown as the paths a reader would type (see
:func:`display_path`).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd

from dino_rnn.files import REFERENCE, ROOT, STUDY_JSON, write_text
from dino_rnn.settings import COMPARED, ParameterError, settings_of
from dino_rnn.plots import ANBN_LABELS, plot_anbn
from dino_rnn.report import goodness
from dino_rnn.report.tables import (
    PAIRED_BY,
    PAIRED_ON,
    anbn_frame,
    anbn_settings,
    comparison_frame,
    greedy_frame,
    load_anbn,
    load_metrics,
    model_style,
    paired_differences,
    paired_frame,
    plot_model,
    plot_overlay,
    protocol_note,
    published_for,
    samples_frame,
    samples_table,
    seconds_text,
    select_anbn,
    select_runs,
    show_setting,
    summary_frame,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
NOTEBOOK_DIR = ROOT / "notebooks"
HTML = "html"
EXECUTED = "executed"
COMPARISON = "comparison"
INDEX = "index.html"
LEARNER_SUFFIX = ".code.html"
# The study's direct dependencies, whose versions the index lists.
SOFTWARE = ("torch", "numpy", "pandas", "matplotlib", "papermill", "nbclient", "nbconvert", "ipykernel", "latex2mathml")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
FIGURE_DPI = 110


def css() -> str:
    return (TEMPLATES / "report.css").read_text(encoding="utf-8")


def reader_name(stem: str) -> str:
    return f"{stem}.html"


def learner_name(stem: str) -> str:
    return f"{stem}{LEARNER_SUFFIX}"


# ---------------------------------------------------------------------------
# No machine paths
# ---------------------------------------------------------------------------


def display_path(path, base: Path = NOTEBOOK_DIR) -> str:
    """How a report shows a path: relative to ``notebooks/`` (where the notebooks run) inside the
    project, ``~/…`` in the home folder, otherwise ``…/`` and the last part only."""
    p = Path(os.path.abspath(path))
    try:
        p.relative_to(ROOT)
        return os.path.relpath(p, base)
    except ValueError:
        pass
    home = Path.home()
    try:
        return "~/" + p.relative_to(home).as_posix() if p != home else "~"
    except ValueError:
        return f"…/{p.name}"


def path_substitutions(results_dir, staging=None, data=()) -> list[tuple[str, str]]:
    """(machine path, what a report shows instead), longest first. ``data``: names files used."""
    results_dir = Path(results_dir).resolve()
    shown = display_path(results_dir)
    subs = {str(results_dir): shown}
    if staging is not None:
        subs[str(Path(staging))] = shown
        subs[os.path.realpath(staging)] = shown
    for d in [data] if isinstance(data, (str, os.PathLike)) else (data or ()):
        subs[str(d)] = subs[os.path.abspath(d)] = subs[os.path.realpath(d)] = display_path(d)
    subs[str(NOTEBOOK_DIR)] = "."
    subs[str(ROOT)] = ".."
    import tempfile

    subs[os.path.realpath(tempfile.gettempdir())] = "…"
    home = str(Path.home())
    if home not in ("/", ""):
        subs[home] = "~"
    return sorted(((k, v) for k, v in subs.items() if k and k != "/"), key=lambda kv: -len(kv[0]))


# A staging folder of any run (``.NAME.dino-rnn/staging-…``), wherever it was.
_STAGING = re.compile(r"(?:/[^/\s'\"]+)*/\.([^/\s'\"]+)\.dino-rnn/staging-[0-9]+-[0-9]+-[0-9]+")


def scrub(text: str, subs: list[tuple[str, str]]) -> str:
    """``text`` with every machine path of ``subs`` replaced, and any staging folder left shown as its results folder."""
    for k, v in subs:
        if k in text:
            text = re.sub(re.escape(k) + r"(?=$|[/\s'\"`),:;\]])", v.replace("\\", "\\\\"), text)
    return _STAGING.sub(lambda m: f"…/{m.group(1)}", text)


def scrub_notebook(nb, subs: list[tuple[str, str]]):
    """Machine paths out of a notebook's sources, outputs and papermill record (in place)."""
    for cell in nb.cells:
        cell.source = scrub(cell.source, subs)
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = scrub(out["text"], subs)
            if "traceback" in out:
                out["traceback"] = [scrub(t, subs) for t in out["traceback"]]
            if "evalue" in out:
                out["evalue"] = scrub(out["evalue"], subs)
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    out["data"][mime] = scrub(value, subs)
    pm = nb.metadata.get("papermill")
    if pm:
        for key in ("input_path", "output_path", "cwd"):
            if isinstance(pm.get(key), str):
                pm[key] = scrub(pm[key], subs)
        params = pm.get("parameters") or {}
        for k, v in list(params.items()):
            if isinstance(v, str):
                params[k] = scrub(v, subs)
    return nb


def clean_executed(path, results_dir, staging=None, data=None, subs=None) -> None:
    """Rewrite an executed notebook without machine paths (the study does this for every one it runs).

    ``subs``: the substitutions to use, if already made (a Dask task gets the client's, whose
    folders its own machine may not have), else :func:`path_substitutions` of the others.
    """
    import nbformat

    from dino_rnn.files import atomic_path

    nb = nbformat.read(str(path), as_version=4)
    scrub_notebook(nb, [tuple(kv) for kv in subs] if subs is not None else path_substitutions(results_dir, staging, data))
    with atomic_path(path) as tmp:
        nbformat.write(nb, str(tmp))


# ---------------------------------------------------------------------------
# Notebook reports (nbconvert)
# ---------------------------------------------------------------------------


def _mathml(tex: str, display: bool) -> str:
    from latex2mathml.converter import convert

    try:
        return convert(tex.strip(), display="block" if display else "inline")
    except Exception:  # TeX that latex2mathml cannot read: show the source rather than fail the page
        d = "$$" if display else "$"
        return f"<code>{html.escape(d + tex + d)}</code>"


@functools.lru_cache(maxsize=None)
def _renderer_class():
    from nbconvert.filters.markdown_mistune import IPythonRenderer

    class Renderer(IPythonRenderer):
        """nbconvert's Markdown renderer, with MathML for math and ``links`` (a link's target → the
        HTML report's) for links to the notebooks."""

        def __init__(self, *args, links: dict[str, str] | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.links = dict(links or {})

        def block_math(self, body: str) -> str:
            return _mathml(body, True)

        def inline_math(self, body: str) -> str:
            return _mathml(body, False)

        def latex_environment(self, name: str, body: str) -> str:
            return _mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", True)

        def link(self, text: str, url: str, title=None) -> str:
            return super().link(text, self.links.get(url, url), title)

    return Renderer


_EXPORT_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4096)
def _clean_html(html: str) -> str:
    """nbconvert's ``clean_html`` filter (bleach), once per distinct text in a process: both reports
    of a notebook, and every seed's, sanitise the same Markdown cells (a third of an export's time)."""
    from nbconvert.filters import clean_html

    return clean_html(html)


@functools.lru_cache(maxsize=None)
def _exporter(learner: bool):
    """The exporter of the learner's (with code) or the reader's report, one per process: its
    templates compile once (about 0.25 s, each time a new exporter renders). A notebook's links
    come with each export (``resources["dino_rnn"]["links"]``); :data:`_EXPORT_LOCK` keeps two
    threads from sharing it at once."""
    from jinja2 import pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import MarkdownWithMath

    renderer = _renderer_class()

    class ReportExporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context, source):
            cell = context.get("cell", {})
            links = ((context.get("resources") or {}).get("dino_rnn") or {}).get("links")
            r = renderer(escape=False, attachments=cell.get("attachments", {}), embed_images=True,
                         exclude_anchor_links=True, links=links, **self.lexer_options)
            return MarkdownWithMath(renderer=r).render(source)

    return ReportExporter(
        filters={"clean_html": _clean_html},
        extra_template_basedirs=[str(TEMPLATES)],
        template_name="dino_report",
        exclude_input=not learner,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
        exclude_anchor_links=True,
    )


def _drop_widgets(nb):
    """Widget outputs need a script from the network to draw: drop them (and the widget state)."""
    for cell in nb.cells:
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
    nb.metadata.pop("widgets", None)
    return nb


def warm_exporters() -> None:
    """Make both exporters and render a tiny notebook with each, so that their templates are
    compiled (and pygments, bleach and friends loaded) before a report is needed: a study does
    this in the background while its notebooks run."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A\n[b](c.ipynb) $x$"),
                                         nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output(
                                             "stream", name="stdout", text="1\n")])])
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    for learner in (False, True):
        _render(nb, learner, {})


def _render(nb, learner: bool, links: dict[str, str], title: str = "", name: str = "", index: str = "",
            other: str = "", other_label: str = "") -> str:
    """One report of ``nb`` as HTML: the reader's or (``learner``) the learner's exporter, with what
    the template shows (``title``, the links to ``index`` and to the ``other`` report) and
    ``links`` (a notebook link's target → its report)."""
    resources = {"dino_rnn": {"css": css(), "index": index, "other": other, "title": title,
                              "other_label": other_label, "links": links}, "metadata": {"name": name}}
    with _EXPORT_LOCK:
        body, _ = _exporter(learner).from_notebook_node(nb, resources=resources)
    return body


def export_notebook(executed: Path, dest_dir: Path, stem: str, links: dict[bool, dict[str, str]], index: str,
                    subs: list[tuple[str, str]], title: str) -> list[Path]:
    """The executed notebook as its two reports in ``dest_dir``: ``stem.html`` and ``stem.code.html``."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    params = (nb.metadata.get("papermill") or {}).get("parameters") or {}
    own = [(v, subs[0][1]) for k, v in params.items() if k == "RESULTS_DIR" and isinstance(v, str) and os.path.isabs(v)]
    scrub_notebook(_drop_widgets(nb), own + subs)
    written = []
    for learner in (False, True):
        name, other = (learner_name(stem), reader_name(stem)) if learner else (reader_name(stem), learner_name(stem))
        body = _render(nb, learner, links[learner], title=title + (" (with code)" if learner else ""), name=title,
                       index=index, other=other,
                       other_label="the report without code" if learner else "the same with its code")
        written.append(write_text(dest_dir / name, body))
    return written


def notebook_title(executed: Path) -> str:
    """The notebook's first Markdown heading (its own title), else its file name."""
    try:
        nb = json.loads(Path(executed).read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "markdown":
                src = "".join(cell.get("source", ""))
                m = re.search(r"^#\s+(.+)$", src, re.M)
                if m:
                    return re.sub(r"[*_`]", "", m.group(1)).strip()
    except (OSError, ValueError):
        pass
    return Path(executed).stem


# ---------------------------------------------------------------------------
# What the folder holds
# ---------------------------------------------------------------------------


@dataclass
class Executed:
    notebook: str  # e.g. "03_lstm.ipynb"
    seed: int | None  # None: the comparison notebook
    path: Path

    @property
    def stem(self) -> str:
        return Path(self.notebook).stem

    @property
    def html_dir(self) -> str:
        return "" if self.seed is None else f"seed{self.seed}/"


def executed_notebooks(results_dir) -> list[Executed]:
    d = Path(results_dir) / EXECUTED
    out = []
    if (d / f"{COMPARISON}.ipynb").is_file():
        out.append(Executed(f"{COMPARISON}.ipynb", None, d / f"{COMPARISON}.ipynb"))
    for sd in sorted(d.glob("seed*"), key=lambda p: (len(p.name), p.name)):
        m = re.fullmatch(r"seed(\d+)", sd.name)
        if m and sd.is_dir():
            out += [Executed(p.name, int(m.group(1)), p) for p in sorted(sd.glob("*.ipynb"))]
    return out


def read_study(results_dir) -> dict:
    try:
        return json.loads((Path(results_dir) / STUDY_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _links(page: Executed, available: list[Executed], learner: bool) -> dict[str, str]:
    """Where a link from ``page`` to ``NAME.ipynb`` goes: that notebook's report of the same flavour."""
    name = learner_name if learner else reader_name
    seeds = sorted({e.seed for e in available if e.seed is not None})
    out = {}
    for e in available:
        if e.seed is None:
            out[e.notebook] = ("../" if page.seed is not None else "") + name(e.stem)
        elif page.seed is None and e.seed == seeds[0]:
            out[e.notebook] = f"seed{e.seed}/{name(e.stem)}"
        elif page.seed is not None and e.seed == page.seed:
            out[e.notebook] = name(e.stem)
    return out


# ---------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------


def _figure(fig, alt: str, caption: str = "") -> dict:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    w, h = fig.get_size_inches() * FIGURE_DPI
    plt.close(fig)
    src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return {"src": src, "alt": alt, "caption": caption, "width": int(round(w)), "height": int(round(h))}


def _when(study: dict, runs: list[dict]) -> str:
    started, finished = study.get("started"), study.get("finished")
    if started and finished:
        return f"{started} to {finished}"
    if finished or started:
        return str(finished or started)
    stamps = sorted(m["finished"] for m in runs if m.get("finished"))
    if stamps:
        return f"last run finished {stamps[-1]}"
    return "not recorded in this folder"


def _setting_values(runs: list[dict], key: str) -> str:
    """The values of setting ``key`` among ``runs``, in order (None, where only some runs have
    one, e.g. the from-scratch cell's nonlinearity, is left out)."""
    values = list(dict.fromkeys(settings_of(m)[key] for m in runs))
    shown = [v for v in values if v is not None] or values
    return ", ".join(show_setting(key, v) for v in shown)


def _settings(runs: list[dict], study: dict) -> pd.DataFrame:
    """Every compared setting (:data:`~dino_rnn.settings.COMPARED`, by its one name), the seeds,
    the device, the names file and its split."""
    seeds = sorted({m["parameters"]["seed"] for m in runs})
    devices = dict.fromkeys(str(m["parameters"].get("device")) for m in runs)
    data = next((m["data"] for m in runs if m.get("data")), {})
    rows = [("seeds", ", ".join(map(str, seeds)))]
    rows += [(k, _setting_values(runs, k)) for k in COMPARED if k != "arch"]
    rows += [
        ("device", ", ".join(devices)),
        ("names file", f"{Path(data['path']).name if data.get('path') else '—'} (sha256 {str(data.get('sha256', '—'))[:16]}…)"),
        ("names; split train / valid / test", f"{data.get('names', '—')}; {data.get('train', '—')} / {data.get('valid', '—')} / {data.get('test', '—')}"),
    ]
    if study.get("parameters", {}).get("jobs"):
        rows.append(("worker processes", str(study["parameters"]["jobs"])))
    return pd.DataFrame(rows, columns=["setting", "value"])


def _software(runs: list[dict], study: dict, anbn: list[dict]) -> pd.DataFrame:
    recorded = dict(study.get("versions") or {})
    source = "study.json"
    if not recorded:  # older folders: what each run recorded
        source = "the runs' metrics"
        for m in runs + anbn:
            for k, v in (m.get("versions") or {}).items():
                recorded.setdefault(k, v)
    rows = [(k, str(v)) for k, v in recorded.items()]
    return pd.DataFrame(rows or [("—", "not recorded")], columns=[f"package (from {source})", "version"])


def _timings(study: dict) -> pd.DataFrame | None:
    jobs = [j for j in study.get("jobs", []) if isinstance(j, dict)]
    if not jobs:
        return None
    rows = []
    for nb in dict.fromkeys(j["notebook"] for j in jobs):
        js = [j for j in jobs if j["notebook"] == nb]
        secs = [j.get("seconds", math.nan) for j in js]
        bad = [j for j in js if j.get("status") != "ok"]
        rows.append({"notebook": nb, "runs": str(len(js)), "mean": seconds_text(sum(secs) / len(secs)),
                     "longest": seconds_text(max(secs)), "failed": str(len(bad)) if bad else "—"})
    return pd.DataFrame(rows)


def _problems(runs: list[dict], study: dict) -> list[str]:
    out = [f"{j['notebook']} seed {j['seed']}: {j.get('message') or 'failed'}"
           for j in study.get("jobs", []) if isinstance(j, dict) and j.get("status") not in (None, "ok")]
    out += [f"{m['label']} seed {m['parameters']['seed']}: {m['status']}: {m.get('message', '')}" for m in runs if m["status"] != "ok"]
    if study.get("report_error"):
        out.append(f"the report: {study['report_error']}")
    return out


def index_figures(results_dir) -> dict:
    """The index page's figures from ``results_dir``'s metrics and aⁿbⁿ results (PNG data URLs
    with their alt text and captions): ``overlay`` and ``models`` (lists), ``anbn`` (a list, or
    None without aⁿbⁿ results). Drawing them takes ~2 s; a study draws them while the comparison
    notebook runs and hands them to :func:`build_site`."""
    results_dir = Path(results_dir)
    runs, _ = select_runs(load_metrics(results_dir))
    return _draw_figures(runs, published_for(runs), select_anbn(load_anbn(results_dir))[0])


def _draw_figures(runs: list[dict], published, anbn_runs: list[dict]) -> dict:
    """:func:`index_figures` from the selected runs, the published table and the aⁿbⁿ runs."""
    labels = {m["architecture"]: m["label"] for m in runs}
    overlay = [_figure(plot_overlay(runs, published),
                       "Validation loss per epoch of every model, mean over seeds",
                       "Validation loss per epoch, the mean over seeds. Each model has its own colour, line style and "
                       "marker; the error bars right of the curves are ± one standard deviation over seeds at the "
                       "last epoch; hollow stars are the published validation losses (one unseeded run each).")]
    models = [_figure(plot_model(runs, a, published), f"Training and validation loss per epoch of {labels[a]}")
              for a in dict.fromkeys(m["architecture"] for m in runs if m["status"] == "ok")]
    anbn = None
    if anbn_runs:
        first = anbn_runs[0]
        anbn = [_figure(plot_anbn(first), f"aⁿbⁿ training and validation loss per epoch, seed {first['parameters']['seed']}",
                        f"Seed {first['parameters']['seed']}: " + ", ".join(
                            ANBN_LABELS.get(k, k) for k in first["models"]) + " (log scale).")]
    return {"overlay": overlay, "models": models, "anbn": anbn, **_goodness_figures(runs)}


def index_page(results_dir, reports: list[Executed] | None = None, generator: str = "dino-rnn report",
               source=None, figures: dict | None = None, explore: dict | None = None) -> str:
    """``html/index.html`` for ``results_dir``, as a string (see the module docstring).

    ``source``: where the files are, if not in ``results_dir`` yet (a study's staging folder).
    ``figures``: :func:`index_figures` of those files, if already drawn. ``explore``: what
    :func:`write_explore` wrote (default: the explore page's link if it can be built, else why
    not). The page is made of parts, each a function that returns what the template shows of it.
    """
    shown = Path(results_dir)
    results_dir = Path(source) if source is not None else shown
    runs, left_out = select_runs(load_metrics(results_dir))
    if not runs:
        raise ParameterError(f"{display_path(results_dir)} has no metrics/*.json: nothing to report; run dino-rnn study first")
    study = read_study(results_dir)
    published = published_for(runs)
    anbn_runs, anbn_left = select_anbn(load_anbn(results_dir))
    figures = _draw_figures(runs, published, anbn_runs) if figures is None else figures
    left_out = left_out + [f"aⁿbⁿ seed {r['parameters']['seed']}: other settings" for r in anbn_left]
    reports = executed_notebooks(results_dir) if reports is None else reports
    return _render_index(
        **_title_part(runs),
        **_facts_part(runs, study, shown),
        **_comparison_part(runs, published, left_out, figures),
        **_goodness_part(runs, figures),
        **_samples_part(runs),
        **_anbn_part(anbn_runs, figures),
        **_reports_part(reports, study, runs, shown),
        **_settings_part(runs, study, load_anbn(results_dir)),
        explore=explore if explore is not None else _explore_link(results_dir),
        downloads=downloads(results_dir),
        generator=generator,
    )


def _render_index(**page) -> str:
    """The index template, filled with ``page`` (every part's values) and the page's own words."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=False)
    env.globals["zip"] = zip
    return env.get_template("index.html.j2").render(
        css=css(),
        built=time.strftime("%Y-%m-%d %H:%M"),
        **page,
    )


def _title_part(runs: list[dict]) -> dict:
    """The page's title and first paragraph, naming the names file the runs read."""
    data = goodness.data_title(runs)
    n = next((m["data"].get("names") for m in runs if m.get("data")), None)
    models = len({m["architecture"] for m in runs})
    if goodness.is_dino_names(runs):
        lede = ("Six next-character models (an RNN from nn.Linear layers, nn.RNN, nn.LSTM, nn.GRU, and an RNN and an "
                "LSTM written in NumPy) learned to write dinosaur names from the 1536 Dino Names, under the published "
                "protocol. This page gathers the whole study; the notebook reports below show each step.")
    else:
        count = {1: "One", 2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six"}.get(models, str(models))
        lede = (f"{count} next-character models learned to write names from {data}"
                + (f" ({n} names)" if n else "") + ", under the published protocol. This page gathers the whole "
                "study; the notebook reports below show each step.")
    return {"title": f"{data}: {'six' if models == 6 else models} character-level language models, side by side",
            "lede": lede}


def _goodness_figures(runs: list[dict]) -> dict:
    """The index page's position plot (an empty list without the count models)."""
    rows = goodness.ladder_rows(runs)
    if not rows:
        return {"by_position": []}
    return {"by_position": [_figure(goodness.plot_by_position(runs, rows, model_style),
                                    "Test loss by position in the name, every model and the best count model",
                                    goodness.position_caption(runs, rows))]}


def _goodness_part(runs: list[dict], figures: dict) -> dict:
    """How good is good: the count models' ladder, each model's gain over the best, the position plot."""
    rows = goodness.ladder_rows(runs)
    if not rows:
        return {"ladder": None, "ladder_num": [], "gains": None, "gains_num": [], "goodness_text": "",
                "goodness_missing": goodness.goodness_markdown(runs).split("\n\n", 1)[-1].strip(), "by_position": []}
    ladder, gains = goodness.ladder_frame(rows), goodness.gains_frame(goodness.gains(runs, rows))
    return {"ladder": ladder, "ladder_num": [c for c in ladder.columns if c not in ("Count model",)],
            "gains": gains, "gains_num": [c for c in gains.columns if c not in ("Model", "Holds")],
            "gains_class": lambda row: "holds" if row[-1] == "yes" else "",
            "goodness_text": goodness.goodness_text(runs, rows), "goodness_missing": "",
            "by_position": figures.get("by_position", [])}


def _facts_part(runs: list[dict], study: dict, shown: Path) -> dict:
    """The top of the page: what ran, when, how long, what failed, and how far from the protocol."""
    problems = _problems(runs, study)
    jobs = [j for j in study.get("jobs", []) if isinstance(j, dict)]
    n_ok = sum(j.get("status") == "ok" for j in jobs)
    outcome = (f"{n_ok} of {len(jobs)} notebooks ran" if jobs else f"{len(runs)} runs") + (
        "; every model trained to the end" if not problems else f"; {len(problems)} problem(s) below")
    note = protocol_note(runs)
    notes = [f"Not the published protocol ({note}): these numbers check that everything runs; "
             "they are not comparable with the published ones."] if note else []
    models = {m["architecture"] for m in runs}
    seeds = sorted({m["parameters"]["seed"] for m in runs})
    workers = study.get("parameters", {}).get("jobs")
    return {
        "ok": not problems, "problems": problems, "outcome": outcome, "notes": notes,
        "when": _when(study, runs),
        "took": seconds_text(study.get("seconds")) + (f" on {workers} worker processes" if workers else ""),
        "runs_line": f"{len(runs)} runs: {len(models)} models × seeds {', '.join(map(str, seeds))}",
        "folder": display_path(shown, ROOT),
        "reference_line": study.get("reference", ""),
    }


def _comparison_part(runs: list[dict], published, left_out: list[str], figures: dict) -> dict:
    """The comparison table, the runs left out of it, the paired differences and the curves."""
    labels = {m["architecture"]: m["label"] for m in runs}
    seeds = sorted({m["parameters"]["seed"] for m in runs})
    epochs = sorted({m["parameters"]["epochs"] for m in runs})
    pub_count = sum(1 for a in labels if published is not None and a in published.index)
    caption = (f"Cross-entropy in nats per character (lower is better) at each run's best-validation epoch: the "
               f"mean ± standard deviation over {len(seeds)} seed{'s' * (len(seeds) > 1)} "
               f"({', '.join(map(str, seeds))}), {', '.join(map(str, epochs))} epochs; the test loss also in bits "
               "per character (nats / ln 2) and as a perplexity (e^nats). Every model of a seed "
               "was trained and tested on the same split." + (" The published figures "
               f"({pub_count} models) are one unseeded run per model, each on its own random split." if pub_count else ""))
    comp = losses_first(comparison_frame(summary_frame(runs, published)))
    pairs = paired_differences(runs)
    return {
        "table_caption": caption, "comparison_table": comp,
        "comparison_num": [c for c in comp.columns if c != "Model"], "left_out": left_out,
        "pairs": paired_frame(pairs, labels) if len(pairs) else None, "pairs_num": [PAIRED_BY, PAIRED_ON],
        "pairs_class": lambda row: "holds" if row[-1] == "yes" else "",
        "overlay": figures["overlay"], "model_figures": figures["models"],
    }


def _samples_part(runs: list[dict]) -> dict:
    """The samples summary and the first seed's greedy names side by side."""
    st = samples_table(runs)
    greedy = greedy_frame(runs)
    return {
        "samples": samples_frame(st) if len(st) else None,
        "samples_num": ["Greedy: new / duplicate", "Greedy: mean length", "Sampled: new / duplicate",
                        "Sampled: mean length", "Real names: mean length"],
        "greedy": greedy.reset_index() if len(greedy) else None,
        "greedy_seed": greedy.index.name.split("(")[-1].rstrip(")") if len(greedy) else "",
    }


def _anbn_part(anbn_runs: list[dict], figures: dict) -> dict:
    """The aⁿbⁿ lab's table, caption and curves (all empty without its results)."""
    if not anbn_runs:
        return {"anbn": None, "anbn_num": [], "anbn_caption": "", "anbn_figures": []}
    table = anbn_frame(anbn_runs)
    t, p = anbn_runs[0]["task"], anbn_runs[0]["parameters"]
    caption = (f"{t['sequences']} sequences aⁿbⁿEOS with n in {t['n_range'][0]}..{t['n_range'][1]}, split "
               f"{t['train']}/{t['valid']}/{t['test']}; {p['epochs']} epochs; {anbn_settings(p)}; "
               f"seeds {', '.join(str(r['parameters']['seed']) for r in anbn_runs)}. Final-epoch losses, "
               "mean ± std over seeds; the accuracy counts the positions whose next token is determined. "
               "comparison.md explains every column.")
    return {"anbn": table, "anbn_num": [c for c in table.columns if c not in ("Model", "Optimiser")],
            "anbn_caption": caption, "anbn_figures": figures["anbn"] or []}


def _reports_part(reports: list[Executed], study: dict, runs: list[dict], shown: Path) -> dict:
    """The notebook reports: one row per notebook (the comparison's first), one column per seed."""
    jobs = [j for j in study.get("jobs", []) if isinstance(j, dict)]
    seeds = sorted({m["parameters"]["seed"] for m in runs})
    seeds_with = {e.seed for e in reports if e.seed is not None}
    ran_seeds = sorted({j["seed"] for j in jobs if isinstance(j.get("seed"), int) and j["seed"] >= 0}) or seeds
    columns = sorted(seeds_with | set(ran_seeds))
    comparison, first_row = _comparison_row(reports, len(columns))
    rows = [first_row] + _notebook_rows(reports, jobs, columns)
    absent = [s for s in columns if s not in seeds_with]
    note = ""
    if absent:
        note = (f"The executed notebooks of seed{'s' * (len(absent) > 1)} {', '.join(map(str, absent))} are not in "
                "this folder" + (" (the committed reference keeps one seed's, to stay small; "
                                 "dino-rnn study --reference writes them all)" if _is_reference(shown) else "")
                + "; their numbers are in the tables above.")
    return {"report_columns": [f"seed {s}" for s in columns] or ["—"], "report_rows": rows,
            "reports_note": note, "comparison": comparison}


MISSING = "not in this folder"


def _comparison_row(reports: list[Executed], n_columns: int) -> tuple[dict | None, dict]:
    """The comparison notebook's two reports (None if not run here), and its row of the table."""
    e = next((e for e in reports if (e.notebook, e.seed) == (f"{COMPARISON}.ipynb", None)), None)
    comparison = {"reader": reader_name(COMPARISON), "learner": learner_name(COMPARISON)} if e else None
    first = {**comparison, "status": "ok"} if comparison else {"missing": MISSING}
    row = {"title": notebook_title(e.path if e else NOTEBOOK_DIR / f"{COMPARISON}.ipynb"),
           "name": f"{COMPARISON}.ipynb", "cells": [first] + [{"missing": ""} for _ in range(n_columns - 1)]}
    return comparison, row


def _notebook_rows(reports: list[Executed], jobs: list[dict], columns: list[int]) -> list[dict]:
    """One row per model notebook: for each seed, its two reports and how its run ended."""
    status = {(j["notebook"], j["seed"]): j.get("status", "ok") for j in jobs}
    by_key = {(e.notebook, e.seed): e for e in reports}
    notebooks = sorted(dict.fromkeys([j["notebook"] for j in jobs] + [e.notebook for e in reports if e.seed is not None]))
    rows = []
    for nb in notebooks:
        cells = []
        for s in columns:
            e = by_key.get((nb, s))
            cells.append({"reader": f"seed{s}/{reader_name(e.stem)}", "learner": f"seed{s}/{learner_name(e.stem)}",
                          "status": status.get((nb, s), "ok")} if e is not None else {"missing": MISSING})
        title = next((notebook_title(e.path) for e in reports if e.notebook == nb), None) or notebook_title(NOTEBOOK_DIR / nb)
        rows.append({"title": title, "name": nb, "cells": cells})
    return rows


def _settings_part(runs: list[dict], study: dict, anbn: list[dict]) -> dict:
    """The settings, the software and the time each notebook took."""
    return {
        "settings": _settings(runs, study), "software": _software(runs, study, anbn),
        "timings": _timings(study), "timings_num": ["runs", "mean", "longest", "failed"],
        "timings_caption": "Wall time of each notebook, kernel start-up and HTML included, over its runs.",
    }


# The tables as files, beside html/ in a results folder: (file, what it holds).
DOWNLOADS = (("comparison.csv", "one row per model: means, standard deviations, published"),
             ("per_seed.csv", "one row per model and seed"),
             ("comparison.md", "the tables as Markdown text"))


def downloads(source) -> list[dict]:
    """Links (relative to ``html/``) to the tables' files that are in ``source``."""
    return [{"href": f"../{name}", "name": name, "what": what} for name, what in DOWNLOADS
            if (Path(source) / name).is_file()]


def losses_first(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparison table with the columns a reader looks for first beside the model: the test,
    validation and training losses (what a phone shows before any sideways swipe), then the rest."""
    first = [c for key in ("test loss", "validation loss", "train loss") for c in frame.columns
             if c.lower().startswith(key)]
    return frame[[c for c in frame.columns[:1]] + first + [c for c in frame.columns[1:] if c not in first]]


def _explore_link(source) -> dict:
    """The index's line about the explore page: ``{"href": ...}``, or ``{"why": ...}`` it is not built."""
    from dino_rnn.report.explore import EXPLORE, why_not

    why = why_not(source)
    return {"why": why} if why else {"href": EXPLORE}


def write_explore(source, dest: Path, subs, generator: str, log=None, built=None) -> dict:
    """``dest/explore.html`` from the checkpoints in ``source``, if it has any; returns the
    index's line about it (:func:`_explore_link`). ``built``: a future of
    :func:`~dino_rnn.report.explore.explore_page`'s result for ``source`` and ``generator``, if it
    was already being made (a study makes it while its comparison notebook runs)."""
    from dino_rnn.report.explore import EXPLORE, explore_page, why_not

    try:
        page = built.result() if built is not None else explore_page(source, generator)
    except Exception as err:  # the rest of the report does not depend on it
        if log:
            log(f"  HTML of the explore page failed: {err}")
        return {"why": f"it could not be built ({str(err).splitlines()[0]})"}
    if page is None:
        return {"why": why_not(source) or "no checkpoint in this folder could be loaded"}
    write_text(Path(dest) / EXPLORE, scrub(page, subs))
    return {"href": EXPLORE}


def _is_reference(results_dir) -> bool:
    return Path(results_dir).resolve() == REFERENCE.resolve()


# ---------------------------------------------------------------------------
# Building the whole html/ folder
# ---------------------------------------------------------------------------


def report_substitutions(results_dir, staging=None, data=()) -> list[tuple[str, str]]:
    """The machine paths a study's reports hide: :func:`path_substitutions` with the names files
    ``data`` (the study's, ``DINO_RNN_DATA``'s) — what :func:`build_site` uses."""
    data = list(data) + [os.environ.get("DINO_RNN_DATA")]
    return path_substitutions(results_dir, staging, [d for d in data if d])


def report_key(e: Executed, available: list[Executed], subs) -> dict:
    """Everything besides the executed notebook that :func:`export_notebook` makes ``e``'s reports from.

    A Dask task that exports its notebook's reports returns this with them; :func:`build_site`
    keeps them only if its own key for that notebook is the same (else it exports again).
    """
    return {
        "title": notebook_title(e.path) + (f" (seed {e.seed})" if e.seed is not None else ""),
        "index": ("../" if e.seed is not None else "") + INDEX,
        "links": {learner: _links(e, available, learner) for learner in (False, True)},
        "subs": [list(kv) for kv in subs],
    }


def export_report(e: Executed, dest: Path, key: dict) -> list[Path]:
    """``e``'s two reports into ``dest`` (the ``html/`` folder), made from ``key`` (:func:`report_key`)."""
    return export_notebook(e.path, dest / e.html_dir.rstrip("/") if e.seed is not None else dest, e.stem,
                           key["links"], key["index"], [tuple(kv) for kv in key["subs"]], key["title"])


def build_site(results_dir, dest=None, *, staging=None, generator: str = "dino-rnn report", log=None,
               prebuilt: dict | None = None, data=(), figures: dict | None = None, explore=None) -> list[str]:
    """Write ``html/`` for ``results_dir`` into ``dest`` (default ``results_dir/html``).

    ``staging``: the folder the notebooks ran in, if not ``results_dir`` (its path is shown as
    the results folder). ``prebuilt``: ``{(notebook, seed): key}`` of reports already in ``dest``
    (a study's tasks export their own notebooks' reports), each made from ``key``
    (:func:`report_key`); a report whose key is not what this build would use is made again.
    ``data``: names files the run read (their paths are hidden like the others), besides those its
    ``study.json`` and metrics name. ``figures``: the index page's (:func:`index_figures`), if
    already drawn; ``explore``: the explore page's future, if already being made (:func:`write_explore`).
    Returns the files written, relative to ``dest``.
    """
    results_dir = Path(results_dir)
    dest = Path(dest) if dest is not None else results_dir / HTML
    reports = executed_notebooks(staging if staging is not None else results_dir)
    source = staging if staging is not None else results_dir
    data = [(read_study(source).get("parameters") or {}).get("data"), *data]
    data += [m.get("data", {}).get("path") for m in load_metrics(source)]
    subs = report_substitutions(results_dir, staging, data)
    written: list[Path] = []
    for e in reports:
        try:
            key = report_key(e, reports, subs)
            done = (prebuilt or {}).get((e.notebook, e.seed))
            if done is not None and _same_key(done, key):
                html_dir = dest / e.html_dir.rstrip("/") if e.seed is not None else dest
                files = [html_dir / reader_name(e.stem), html_dir / learner_name(e.stem)]
                if all(f.is_file() for f in files):
                    written += files
                    continue
            written += export_report(e, dest, key)
        except Exception as err:  # one unreadable notebook does not cost the others their reports
            if log:
                log(f"  HTML of {e.notebook}{f' seed {e.seed}' if e.seed is not None else ''} failed: {err}")
    explore = write_explore(source, dest, subs, generator, log, built=explore)
    written += [dest / explore["href"]] if explore.get("href") else []
    page = index_page(results_dir, reports, generator, source=staging, figures=figures, explore=explore)
    page = scrub(page, subs)
    written.append(write_text(dest / INDEX, page))
    return sorted(p.relative_to(dest).as_posix() for p in written)


def _same_key(a: dict, b: dict) -> bool:
    """Two :func:`report_key` values, once through pickling/JSON (tuples as lists, keys as given)."""
    norm = lambda k: json.dumps({**k, "links": {str(bool(x)): v for x, v in k["links"].items()},  # noqa: E731
                                 "subs": [list(kv) for kv in k["subs"]]}, sort_keys=True)
    return norm(a) == norm(b)


def versions() -> dict:
    """The Python version and the study's direct dependencies' versions (for study.json)."""
    import platform

    out = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out

"""``html/explore.html``: the trained models of one seed, to play with in the browser.

The page holds each model's weights (from ``checkpoints/``) as JSON numbers, written with the
fewest digits that give back the stored float32 (or float64, the NumPy nets') value exactly,
and runs each cell's forward pass in a few lines of plain JavaScript (``templates/explore.js``,
inline like everything else): a model picker, a prefix box, sliders for the temperature and
top-k, and the next character's probabilities drawn as bars as you type. On load it writes each
model's greedy names for a–z and sets them beside the ones its run recorded (``samples.greedy``
of its metrics JSON). Nothing is fetched: the page opens from disk with no server.

It is the report's only page with a script. Where a folder has no checkpoints (the committed
reference keeps none), the page is not built and the index says why, in one line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from dino_rnn.report.tables import load_metrics, select_runs

EXPLORE = "explore.html"
TEMPLATES = Path(__file__).resolve().parent / "templates"
# A model with more parameters is left out (its weights would make the page heavy to load).
MAX_PARAMETERS = 100_000
ORDER = ("scratch", "rnn", "lstm", "gru", "numpy_rnn", "numpy_lstm")


def _numbers(array) -> str:
    """A JSON list of ``array``'s entries (flattened), each with the fewest digits that give it
    back exactly in its own precision: float32's shortest repr, or float64's."""
    a = np.asarray(array).reshape(-1)
    if a.dtype == np.float32:
        return "[" + ",".join(str(v) for v in a) + "]"
    return "[" + ",".join(repr(float(v)) for v in a.astype(np.float64)) + "]"


def _tensors(named: dict) -> tuple[dict, bool]:
    """``{name: array}`` → ``{name: {"shape", "data"}}`` (data as JSON text) and whether all are float32."""
    out, f32 = {}, True
    for k, v in named.items():
        a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        f32 = f32 and a.dtype == np.float32
        out[k] = {"shape": list(a.shape), "data": _numbers(a)}
    return out, f32


def model_weights(path, arch: str) -> dict:
    """What the page needs of one checkpoint: its cell, sizes, vocabulary and weights."""
    if arch.startswith("numpy_"):
        from dino_rnn.lab import load_numpy_checkpoint

        net, vocab = load_numpy_checkpoint(path)
        params, f32 = _tensors(net.params)
        cell = {"kind": arch, "hidden": net.hidden_size, "layers": 1, "nonlinearity": "tanh"}
    else:
        from dino_rnn.experiment import load_checkpoint

        model, vocab = load_checkpoint(path)
        params, f32 = _tensors(model.state_dict())
        if arch == "scratch":
            cell = {"kind": "scratch", "hidden": model.hidden_size, "layers": 1, "nonlinearity": model.nonlinearity}
        else:
            cell = {"kind": model.cell, "hidden": model.hidden_size, "layers": model.num_layers,
                    "nonlinearity": getattr(model.rnn, "nonlinearity", "tanh")}
    n = sum(int(np.prod(p["shape"])) for p in params.values())
    return {**cell, "vocab": list(vocab.itos), "end": vocab.end, "float32": f32, "parameters": n, "weights": params}


def _seed_runs(source: Path) -> tuple[int | None, list[dict], list[str]]:
    """The seed the page shows (0, else the first whose checkpoints are here), its runs with a
    checkpoint file, and one line per run of that seed left out."""
    runs, _ = select_runs(load_metrics(source))
    ok = [m for m in runs if m["status"] == "ok"]
    here = [m for m in ok if _checkpoint(source, m) is not None]
    seeds = sorted({m["parameters"]["seed"] for m in here})
    if not seeds:
        return None, [], []
    seed = 0 if 0 in seeds else seeds[0]
    chosen = sorted((m for m in here if m["parameters"]["seed"] == seed),
                    key=lambda m: ORDER.index(m["architecture"]) if m["architecture"] in ORDER else len(ORDER))
    missing = [f"{m['label']}: its checkpoint is not in this folder" for m in ok
               if m["parameters"]["seed"] == seed and m not in here]
    return seed, chosen, missing


def _checkpoint(source: Path, m: dict) -> Path | None:
    rel = (m.get("checkpoint") or {}).get("file")
    return source / rel if rel and (source / rel).is_file() else None


def why_not(source) -> str | None:
    """Why the page cannot be built from ``source`` (one line), or None if it can."""
    seed, chosen, _ = _seed_runs(Path(source))
    if seed is None:
        return "this folder has no checkpoints (a study writes them in checkpoints/; the committed results leave them out)"
    return None


def explore_models(source) -> tuple[int | None, list[dict], list[str]]:
    """The seed shown, each of its models (label, cell, weights, recorded greedy names), and what was left out."""
    source = Path(source)
    seed, chosen, left_out = _seed_runs(source)
    models = []
    for m in chosen:
        try:
            w = model_weights(_checkpoint(source, m), m["architecture"])
        except Exception as e:  # a damaged checkpoint costs its own model only
            left_out.append(f"{m['label']}: {str(e).splitlines()[0]}")
            continue
        if w["parameters"] > MAX_PARAMETERS:
            left_out.append(f"{m['label']}: {w['parameters']} parameters, over the page's {MAX_PARAMETERS}")
            continue
        greedy = [{"start": r["start"], "name": r["name"]} for r in (m.get("samples") or {}).get("greedy", [])]
        models.append({"arch": m["architecture"], "label": m["label"], "test_loss": m.get("test_loss"),
                       "greedy": greedy, **w})
    return seed, models, left_out


def _models_json(models: list[dict]) -> str:
    """The models as one JSON text for a ``<script type="application/json">`` (weights already JSON)."""
    parts = []
    for m in models:
        head = {k: v for k, v in m.items() if k != "weights"}
        weights = ",".join(f'{json.dumps(k)}:{{"shape":{json.dumps(w["shape"])},"data":{w["data"]}}}'
                           for k, w in m["weights"].items())
        parts.append(json.dumps(head)[:-1] + f',"weights":{{{weights}}}}}')
    return ("[" + ",\n".join(parts) + "]").replace("</", "<\\/")


def explore_page(source, generator: str = "dino-rnn report") -> str | None:
    """``html/explore.html`` for the results in ``source``, or None when it has no model to show."""
    import jinja2

    seed, models, left_out = explore_models(source)
    if not models:
        return None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("explore.html.j2").render(
        title="Dino Names: play with the trained models", seed=seed, models=models, left_out=left_out,
        css=(TEMPLATES / "report.css").read_text(encoding="utf-8"), script=(TEMPLATES / "explore.js").read_text(encoding="utf-8"),
        data=_models_json(models), generator=generator, built=time.strftime("%Y-%m-%d %H:%M"),
        total=sum(m["parameters"] for m in models))

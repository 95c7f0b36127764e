"""Notebook 01's exercises: the checks pass on the package's own functions, name every planted
mistake, let a stub's NotImplementedError through, and the notebook's cells are the package's source.

A mistake is planted into the package's own source (a textual replacement in
``inspect.getsource``), which is then defined again in the package module's globals: the check
must name that mistake, and no two mistakes may share a message.
"""

from __future__ import annotations

import inspect
import textwrap

import nbformat
import pytest
from conftest import committed

from dino_rnn import models, sample, train
from dino_rnn.exercises import scratch as check
from dino_rnn.exercises.base import ExerciseError
from dino_rnn.exercises.notebooks import exercise_of, student_cell_source

FUNCTIONS = {"scratch_forward": (models.scratch_forward, check.cell),
             "train_step": (train.train_step, check.train_step),
             "generate": (sample.generate, check.generate)}


def planted(fn, old: str, new: str):
    """``fn`` defined again from its own source with ``old`` replaced by ``new`` (which must occur)."""
    src = textwrap.dedent(inspect.getsource(fn))
    assert src.count(old) == 1, f"{old!r} is not once in {fn.__name__}'s source"
    namespace = dict(inspect.getmodule(fn).__dict__)
    exec(compile(src.replace(old, new), f"<planted {fn.__name__}>", "exec"), namespace)
    return namespace[fn.__name__]


# (function, old text, new text, what the message must say)
MISTAKES = {
    "A: state not carried": ("scratch_forward", "for x_t in x:  #", "h_start = h\n    for x_t in x:\n        h = h_start  #",
                             "not carried between steps"),
    "A: tanh missing": ("scratch_forward", "h = torch.tanh(h)", "pass", "tanh is missing"),
    "A: tanh always": ("scratch_forward", 'if cell.nonlinearity == "tanh":', "if True:",
                       "tanh is applied although"),
    "A: state ignored": ("scratch_forward", "if state is None else state", "if True else state",
                         "state argument is ignored"),
    "A: no dropout": ("scratch_forward", "logits = cell.dropout(cell.o2o(", "logits = (cell.o2o(", "dropout is missing"),
    "A: state detached": ("scratch_forward", "h = cell.i2h(torch.cat([x_t, h]))", "h = cell.i2h(torch.cat([x_t, h.detach()]))",
                          "the gradient of i2h.weight"),
    "B: no zero_grad": ("train_step", "optimizer.zero_grad(set_to_none=True)", "pass", "gradients add up"),
    "B: zero_grad after backward": ("train_step", "optimizer.zero_grad(set_to_none=True)\n    loss.backward()",
                                    "loss.backward()\n    optimizer.zero_grad(set_to_none=True)",
                                    "parameters do not move"),
    "B: targets are the inputs": ("train_step", "F.cross_entropy(logits, y)", "F.cross_entropy(logits, x.argmax(dim=1))",
                                  "the input characters (x)"),
    "B: targets shifted again": ("train_step", "F.cross_entropy(logits, y)", "F.cross_entropy(logits[:-1], y[1:])",
                                 "no shift is needed"),
    "B: clip ignored": ("train_step", "nn.utils.clip_grad_norm_(model.parameters(), clip)", "pass", "clip is ignored"),
    "B: clip always": ("train_step", "if clip is not None:", "if True:\n        clip = clip or 1e-3",
                       "clipped although clip is None"),
    "B: returns a tensor": ("train_step", "return loss.item()", "return loss", "as a Python float"),
    "C: temperature ignored": ("generate", "last.double() / temperature", "last.double()", "temperature is ignored"),
    "C: temperature multiplies": ("generate", "last.double() / temperature", "last.double() * temperature",
                                  "multiplied by the temperature"),
    "C: always greedy": ("generate", "if not temperature:", "if True:", "greedy although a temperature"),
    "C: no stop at the end": ("generate", "if nxt == vocab.end:", "if False:", "does not stop at the end marker"),
    "C: the end marker kept": ("generate", "if nxt == vocab.end:\n", "if nxt == vocab.end:\n            out.append('.')\n",
                               "ends with the end marker"),
    "C: state not fed back": ("generate", ".to(device), state)", ".to(device))", "state is not fed back"),
    "C: one too long": ("generate", "while len(out) < max_length:", "while len(out) <= max_length:",
                        "one character too long"),
    "C: generator unused": ("generate", ", generator=generator))", "))", "do not use the generator"),
    "C: endless loop": ("generate", "while len(out) < max_length:\n        last = logits[-1]",
                        "while True:\n        last = logits[-1]\n        nxt = vocab.end + 1", "does it stop at max_length"),
}


@pytest.mark.slow  # the first SGD step of a process takes about a second (torch's lazy set-up)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_check_passes_on_the_package_function(name, capsys):
    fn, run = FUNCTIONS[name]
    run(fn)
    letter = check.EXERCISES[name].letter
    assert capsys.readouterr().out.startswith(f"Exercise {letter} ({check.EXERCISES[name].title}): passed.")


def caught(key: str) -> str:
    name, old, new, _ = MISTAKES[key]
    fn, run = FUNCTIONS[name]
    with pytest.raises(ExerciseError) as e:
        run(planted(fn, old, new))
    return str(e.value)


@pytest.mark.parametrize("key", MISTAKES)
def test_each_planted_mistake_is_named(key):
    message = caught(key)
    name = MISTAKES[key][0]
    assert message.startswith(str(check.EXERCISES[name])), message
    assert MISTAKES[key][3] in message, message


@pytest.mark.slow
def test_different_mistakes_give_different_messages():
    messages = {key: caught(key) for key in MISTAKES}
    assert len(set(messages.values())) == len(messages), messages


def test_a_plant_that_changes_nothing_passes():
    """The planting itself: the package's source defined again passes every check."""
    fn, run = FUNCTIONS["scratch_forward"]
    run(planted(fn, "one character at a time", "one character at a time (again)"))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_stub_raises_not_implemented_naming_the_exercise(name):
    fn, run = FUNCTIONS[name]
    ex = check.EXERCISES[name]
    src = student_cell_source(textwrap.dedent(inspect.getsource(fn)), {"letter": ex.letter, "title": ex.title})
    assert "### BEGIN SOLUTION" not in src and "raise NotImplementedError" in src
    namespace = dict(inspect.getmodule(fn).__dict__)
    exec(compile(src, "<stub>", "exec"), namespace)
    with pytest.raises(NotImplementedError, match=rf"^Exercise {ex.letter} \({ex.title}\) is not done yet"):
        run(namespace[name])


def exercise_cells(text: str) -> dict[str, str]:
    """The solution cells of notebook 01: the function each defines -> its source."""
    nb = nbformat.reads(text, as_version=4)
    out = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and exercise_of(cell):
            name = next(line for line in cell.source.splitlines() if line.startswith("def "))[4:].split("(")[0]
            out[name] = (exercise_of(cell), cell.source)
    return out


def test_the_notebook_cells_are_the_package_sources():
    cells = exercise_cells(committed("notebooks/01_rnn_from_scratch.ipynb"))
    assert list(cells) == list(FUNCTIONS)  # A, B, C in notebook order
    for name, (meta, source) in cells.items():
        ex = check.EXERCISES[name]
        assert meta == {"letter": ex.letter, "title": ex.title}
        assert source.strip() == inspect.getsource(FUNCTIONS[name][0]).strip(), f"{name}: the cell and the package differ"
        assert "### BEGIN SOLUTION" in source  # the student version has something to replace


# ---------------------------------------------------------------------------
# The rest of the notebook runs the student's functions (Experiment.use)
# ---------------------------------------------------------------------------


def small_run(tmp_path, own: dict | None = None, **settings):
    from dino_rnn.experiment import Experiment

    exp = Experiment("scratch", epochs=1, max_names=20, seed=0, results_dir=tmp_path, progress=False, **settings)
    if own:
        exp.use(**own)
    exp.load_data()
    exp.build()
    exp.train()
    exp.sample()
    return exp


@pytest.mark.slow
def test_the_notebook_trains_and_samples_with_the_students_functions(tmp_path, capsys):
    calls = []

    def my_step(model, optimizer, x, y, clip=None):  # the package's step, counted
        calls.append(len(x))
        return train.train_step(model, optimizer, x, y, clip)

    forward = planted(models.scratch_forward, "one character at a time", "one character at a time (mine)")
    gen = planted(sample.generate, "ids = vocab.encode(start)", "ids = vocab.encode(start)  # mine")
    ours = small_run(tmp_path / "a", {"forward": forward, "train_step": my_step, "generate": gen})
    said = capsys.readouterr().out
    assert "training with your scratch_forward and train_step" in said and "autograd" in said
    assert ours.model.forward.__func__ is forward and len(calls) == 20
    package = small_run(tmp_path / "b", autograd=True)  # the same maths through the package's own functions
    assert ours.history.gradient == package.history.gradient == "autograd"
    assert ours.history.train_loss == package.history.train_loss and ours.history.test_loss == package.history.test_loss
    assert ours.samples == package.samples


@pytest.mark.slow
def test_the_packages_own_source_keeps_the_compiled_path(tmp_path, capsys):
    """A function defined again from the package's source (a notebook's solution cell) is the package's."""
    import importlib.util

    path = tmp_path / "cells.py"
    path.write_text("\n\n".join(["import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
                                 "from dino_rnn.data import Vocab\nfrom dino_rnn.models import ScratchRNN"]
                                + [textwrap.dedent(inspect.getsource(f)) for f, _ in FUNCTIONS.values()]))
    spec = importlib.util.spec_from_file_location("cells", path)
    cells = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cells)
    assert cells.scratch_forward is not models.scratch_forward
    exp = small_run(tmp_path / "r", {"forward": cells.scratch_forward, "train_step": cells.train_step,
                                     "generate": cells.generate})
    assert exp.own == {} and "forward" not in exp.model.__dict__
    assert exp.history.gradient == "written-out" and "training with your" not in capsys.readouterr().out


def test_use_refuses_a_forward_for_another_model():
    from dino_rnn.experiment import Experiment
    from dino_rnn.settings import ParameterError

    with pytest.raises(ParameterError, match="from-scratch"):
        Experiment("gru", epochs=1).use(forward=models.scratch_forward)

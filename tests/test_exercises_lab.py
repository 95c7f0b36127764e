"""Notebook 05's exercise checks: each passes the package's solution, and each classic mistake,
planted into that solution's source, is caught with its own message."""

from __future__ import annotations

import inspect
import linecache
import textwrap

import numpy as np
import pytest

from dino_rnn import anbn
from dino_rnn import numpy_nets as nn
from dino_rnn.exercises import lab as check
from dino_rnn.exercises.base import ExerciseError, same_source
from dino_rnn.exercises.notebooks import student_cell_source


_PLANTED: list[str] = []


def solution(name: str):
    return getattr(nn, name, None) or getattr(anbn, name)


def planted(fn, *edits):
    """``fn`` defined again from its source with the textual ``edits`` (old, new) applied."""
    src = textwrap.dedent(inspect.getsource(fn))
    for old, new in edits:
        assert old in src, f"{old!r} is not in {fn.__name__}'s source"
        src = src.replace(old, new)
    filename = f"<planted {fn.__name__} {len(_PLANTED)}>"
    _PLANTED.append(filename)
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)  # as IPython keeps a cell's source
    namespace = dict(fn.__globals__)
    exec(compile(src, filename, "exec"), namespace)
    return namespace[fn.__name__]


@pytest.mark.parametrize("name", list(check.EXERCISES))
def test_the_solution_passes_its_check(name, capsys):
    getattr(check, name)(solution(name))
    assert capsys.readouterr().out.startswith(f"{check.EXERCISES[name]}: passed.")


# (exercise, the edits that plant the mistake, what the message must say)
MISTAKES = [
    ("input_and_target", [("return ids[:-1], ids[1:]", "return ids[:-1], ids[:-1]")], "targets off by one: the target at step t"),
    ("input_and_target", [("return ids[:-1], ids[1:]", "return ids[1:], ids[:-1]")], "input and target are swapped"),
    ("rnn_forward", [('p["V"] @ hs[t])', 'p["V"] @ hs[0])')], "the hidden state is not carried between steps"),
    ("rnn_forward", [("hs[t + 1] = np.tanh(", "hs[t + 1] = (")], "tanh is missing"),
    ("rnn_forward", [("logits = hs[1:] @", "logits = hs[:-1] @")], "the read-out uses h_{t-1}"),
    ("softmax_cross_entropy", [("    dlogits /= T\n", "")], "the gradient is not divided by T"),
    ("softmax_cross_entropy", [("    dlogits[rows, targets] -= 1.0\n", "")], "the one-hot target is not subtracted"),
    ("softmax_cross_entropy", [("z = logits - logits.max(axis=1, keepdims=True)", "z = logits")], "wrong (or NaN) for large logits"),
    ("rnn_backward", [(" * (1.0 - hs[t + 1] ** 2)", "")], "tanh's derivative is missing"),
    ("rnn_backward", [("(dh_out[t] + dh_next)", "dh_out[t]")], "the gradient through time is dropped"),
    ("rnn_backward", [("(1.0 - hs[t + 1] ** 2)", "(1.0 - hs[t] ** 2)")], "tanh's derivative is taken at h_{t-1}"),
    ("lstm_forward", [("np.concatenate([h[t], x[t]])", "np.concatenate([h[0], x[t]])")], "the hidden state is not carried"),
    ("lstm_forward", [("c[t + 1] = f[t] * c[t] +", "c[t + 1] = f[t] * c[0] +")], "the cell state is not carried"),
    ("lstm_forward", [("g[t] = np.tanh(", "g[t] = sigmoid(")], "the candidate g_t takes tanh"),
    ("lstm_backward", [("f[t] * (1.0 - f[t])", "1.0"), ("i[t] * (1.0 - i[t])", "1.0"), ("o[t] * (1.0 - o[t])", "1.0")],
     "the sigmoid's derivative is missing: for the gates f, i and o"),
    ("lstm_backward", [("f[t] * (1.0 - f[t])", "1.0")], "the sigmoid's derivative is missing for the forget gate f"),
    ("lstm_backward", [("dc * c[t] * f[t]", "dc * c[t + 1] * f[t]")], "the forget gate's gradient takes the wrong cell state"),
    ("lstm_backward", [("@ dlogits[t] + dh_next", "@ dlogits[t]")], "the gradient through time from the hidden state is dropped"),
    ("lstm_backward", [("(1.0 - tanh_c**2) + dc_next", "(1.0 - tanh_c**2)")], "the gradient along the cell state is dropped"),
    ("global_norm", [("math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))",
                      "sum(math.sqrt(float(np.vdot(g, g))) for g in grads.values())")], "the sum of each array's norm"),
    ("global_norm", [("math.sqrt(sum(", "(sum(")], "the square root is missing"),
    ("clip_grad_norm", [("    if norm > max_norm:\n        for g in grads.values():\n            g *= max_norm / norm\n",
                         "    for g in grads.values():\n        n = math.sqrt(float(np.vdot(g, g)))\n"
                         "        if n > max_norm:\n            g *= max_norm / n\n")], "each gradient was clipped on its own"),
    ("clip_grad_norm", [("            g *= max_norm / norm\n", "            g = g * max_norm / norm\n")], "the gradients did not change"),
    ("clip_grad_norm", [("    if norm > max_norm:\n", "    if True:\n")], "below max_norm must stay as they are"),
    ("sgd_update", [("param -= grad * lr", "param += grad * lr")], "this climbs the gradient"),
    ("sgd_update", [("param -= grad * lr", "param = param - grad * lr")], "the parameter did not change"),
    ("adam_update", [("math.sqrt(1.0 - beta2**t)", "1.0"), ("(lr / (1.0 - beta1**t))", "lr")], "Adam without bias correction"),
    ("adam_update", [("    param *= 1.0 - lr * weight_decay\n", "")], "the weight decay is missing"),
    ("complete", [("ids.append(nxt)", "pass")], "the token emitted is not fed back"),
    ("complete", [("logits_fn(ids))[-1]", "logits_fn(ids))[0]")], "read the prediction after the *last* token"),
]


@pytest.mark.parametrize("name, edits, message", MISTAKES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_a_planted_mistake_is_caught_with_its_own_message(name, edits, message):
    wrong = planted(solution(name), *edits)
    with pytest.raises(ExerciseError) as caught:
        getattr(check, name)(wrong)
    text = str(caught.value)
    assert text.startswith(f"{check.EXERCISES[name]}: "), text
    assert message in text, text


def test_the_issue_s_catalogue_is_covered_and_every_message_is_its_own():
    """The classic mistakes the issue names each have a planted test; no two tests share a message."""
    said = " | ".join(m for _, _, m in MISTAKES)
    for mistake in ("tanh's derivative is missing", "the sigmoid's derivative is missing",
                    "the gradient through time is dropped", "the forget gate's gradient takes the wrong cell state",
                    "the hidden state is not carried", "targets off by one", "each gradient was clipped on its own",
                    "Adam without bias correction"):
        assert mistake in said
    messages = [m for _, _, m in MISTAKES]
    assert len(set(messages)) == len(messages)


def test_an_unlisted_mistake_says_which_gradient_is_wrong_and_where():
    wrong = planted(nn.rnn_backward, ('"b_h": dz.sum(axis=0)', '"b_h": 2 * dz.sum(axis=0)'))
    with pytest.raises(ExerciseError, match=r"db_h differs from finite differences, largest difference at \[\d\]: .*"
                                            r"a one-step sequence is wrong too"):
        check.rnn_backward(wrong)


def test_the_stub_stops_with_the_exercise_s_name():
    src = student_cell_source(inspect.getsource(nn.rnn_backward), {"letter": "D", "title": "the RNN backward pass"})
    namespace = dict(nn.rnn_backward.__globals__)
    exec(src, namespace)
    with pytest.raises(NotImplementedError, match=r"Exercise D \(the RNN backward pass\) is not done yet"):
        check.rnn_backward(namespace["rnn_backward"])


def test_a_student_s_maths_trains_in_plain_numpy_and_the_package_s_own_source_counts_as_the_package_s():
    mine = planted(nn.rnn_forward)  # the same text, defined again as a notebook cell defines it
    assert mine is not nn.rnn_forward and same_source(mine, nn.rnn_forward)
    assert check.maths(rnn_forward=mine) == nn.MATHS  # the compiled kernels apply
    other = planted(nn.rnn_forward, ("    ### BEGIN SOLUTION\n", "    ### BEGIN SOLUTION\n    pass\n"))
    m = check.maths(rnn_forward=other, rnn_backward=nn.rnn_backward)
    assert m.own() == ["rnn_forward"]
    from dino_rnn import fast
    assert fast.unsupported(nn.NumpyRNN(4, 3, maths=m)) == "it runs your own rnn_forward; the kernels compute the package's"
    assert fast.unsupported(nn.NumpyRNN(4, 3)) is None


def test_training_with_a_student_s_maths_gives_the_package_s_numbers(tmp_path):
    """The NumPy nets trained through a student's (correct) functions in plain NumPy follow the
    compiled kernels' trajectory to float rounding."""
    from dino_rnn.lab import run_anbn

    kw = dict(epochs=2, hidden=8, adam_control=True, progress=False, results_dir=tmp_path)
    theirs = run_anbn(**kw)
    calls = []

    def counted(fn):
        def run(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)
        return run

    own = {k: counted(getattr(nn, k)) for k in ("rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
                                                 "clip_grad_norm", "sgd_update", "adam_update")}
    mine = run_anbn(**kw, maths=nn.Maths(**own), complete_fn=counted(anbn.complete))
    assert set(calls) == {*own, "complete"}  # every one of them ran
    for key in ("numpy_rnn", "numpy_lstm", "numpy_lstm_adam"):
        a, b = mine["models"][key], theirs["models"][key]
        np.testing.assert_allclose(a["history"]["valid_loss"], b["history"]["valid_loss"], rtol=1e-9)
        assert a["extrapolation"] == b["extrapolation"]

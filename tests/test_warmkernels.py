"""Warm kernels (dino_rnn.runner.warmkernels): a kernel reused for one notebook after another is reset
in between, a broken one is replaced, and a notebook gives the same numbers warm as fresh."""

import json
import os
import signal
import time

import nbformat
import pytest

from dino_rnn.runner import study as S
from dino_rnn.runner import warmkernels as W


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("X = 0")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path.name


@pytest.fixture
def pool():
    p = S._kernel_pool()  # as the study makes the comparison notebook's
    yield p
    p.close()


def run(pool, folder, name, timeout=60.0):
    job = S.Job(name, 0, {"X": 1}, str(folder / f"out-{name}"))
    return S._execute(job, str(folder), timeout, kernels=pool)


def outputs(folder, name):
    nb = json.loads((folder / f"out-{name}").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    text = ["".join(o.get("text", "")) for c in code for o in c["outputs"]]
    return [c["execution_count"] for c in code], "".join(text)


@pytest.mark.slow
def test_a_reused_kernel_is_reset_between_notebooks(tmp_path, pool):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    noisy = "import numpy\nnumpy.mean([])"  # a library's warning: remembered in numpy's registry, not the notebook's
    a = notebook(first / "a.ipynb", "secret = 42\nimport json", noisy, "import os\nprint(os.getcwd())")
    b = notebook(second / "b.ipynb", "print('secret' in dir(), 'json' in dir())", noisy,
                 "import os\nprint(os.getcwd())", "import warnings\nwarnings.simplefilter('ignore')")
    c = notebook(second / "c.ipynb", noisy)
    assert run(pool, first, a).status == "ok"
    assert "Mean of empty slice" in outputs(first, a)[1]
    (first / "out-a.ipynb").rename(tmp_path / "out-a.ipynb")
    for f in first.iterdir():  # the first notebook's folder is gone, as a study task's is
        f.unlink()
    first.rmdir()
    assert run(pool, second, b).status == "ok"
    counts, text = outputs(second, b)
    assert counts == [1, 2, 3, 4, 5, 6]  # as from a fresh kernel (parameters, injected parameters, 4 cells)
    assert "False False" in text  # the first notebook's names are gone
    assert "Mean of empty slice" in text  # the warning is shown again, not swallowed as "already shown"
    assert str(second) in text  # it runs in its own folder
    assert run(pool, second, c).status == "ok"
    assert "Mean of empty slice" in outputs(second, c)[1]  # b's filter ended with b
    assert pool.started == 1  # one kernel ran all three


@pytest.mark.slow
def test_a_dead_kernel_is_replaced(tmp_path, pool):
    a = notebook(tmp_path / "a.ipynb", "print('hi')")
    assert run(pool, tmp_path, a).status == "ok"
    (k,) = pool.idle
    os.kill(k.km.provisioner.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while k.km.is_alive() and time.time() < deadline:
        time.sleep(0.1)
    assert run(pool, tmp_path, a).status == "ok"
    assert pool.started == 2


@pytest.mark.slow
def test_a_kernel_whose_notebook_timed_out_is_not_reused(tmp_path, pool):
    slow = notebook(tmp_path / "slow.ipynb", "import time\ntime.sleep(60)")
    job = run(pool, tmp_path, slow, timeout=2)
    assert job.status == "failed" and "Timeout" in job.message
    assert pool.idle == []  # shut down, not handed to the next notebook still busy
    quick = notebook(tmp_path / "quick.ipynb", "print('ok')")
    t0 = time.perf_counter()
    assert run(pool, tmp_path, quick).status == "ok"
    assert time.perf_counter() - t0 < 30 and pool.started == 2


def test_a_cell_error_keeps_the_kernel(tmp_path, pool):
    bad = notebook(tmp_path / "bad.ipynb", "raise ValueError('no')")
    assert run(pool, tmp_path, bad).status == "failed"
    good = notebook(tmp_path / "good.ipynb", "print('ok')")
    assert run(pool, tmp_path, good).status == "ok"
    assert pool.started == 1


def test_a_new_study_closes_the_previous_studys_kernels(tmp_path):
    env = S.kernel_environ()
    first = W.pool("study-a", env, S.KERNEL_ARGUMENTS)
    try:
        a = notebook(tmp_path / "a.ipynb", "print('hi')")
        assert run(first, tmp_path, a).status == "ok"
        (k,) = first.idle
        second = W.pool("study-b", env, S.KERNEL_ARGUMENTS)
        assert second is not first and first.idle == [] and not k.km.is_alive()
        assert W.pool("study-b", env, S.KERNEL_ARGUMENTS) is second
    finally:
        assert W.close_pool() >= 1
    assert W._POOLS == {}


@pytest.mark.slow
def test_a_model_notebook_gives_the_same_numbers_warm_as_fresh(tmp_path, pool, dino_file):
    """The warm kernel first trains another model (other seed, other settings): nothing of it
    reaches the nn.RNN run after it."""
    params = {"EPOCHS": 2, "MAX_NAMES": 60, "DATA": str(dino_file)}
    runs = {}
    for how in ("fresh", "warm"):
        out = tmp_path / how
        if how == "warm":
            before = S.Job("03_lstm.ipynb", 1, {**params, "SEED": 1, "HIDDEN": 32, "RESULTS_DIR": str(tmp_path / "x")},
                           str(tmp_path / "x.ipynb"))
            assert S._execute(before, str(S.NOTEBOOK_DIR), 600, kernels=pool).status == "ok"
        job = S.Job("02_rnn.ipynb", 0, {**params, "SEED": 0, "RESULTS_DIR": str(out)}, str(tmp_path / f"{how}.ipynb"))
        assert S._execute(job, str(S.NOTEBOOK_DIR), 600, kernels=pool if how == "warm" else None).status == "ok"
        runs[how] = json.loads((out / "metrics" / "rnn-seed0.json").read_text())
    assert pool.started == 1
    for key in ("train_loss", "valid_loss", "test_loss", "best_epoch"):
        assert runs["warm"][key] == runs["fresh"][key], key
    assert runs["warm"]["samples"] == runs["fresh"]["samples"]


@pytest.mark.slow
def test_a_reused_kernel_starts_a_new_history_session(tmp_path, pool):
    # With %reset -f's new_session=False the prompt counter went back to 1 inside the old
    # history session, and IPython printed "ERROR! Session/line number was not unique in
    # database" into the next notebook. Each notebook here has cells enough to reach the
    # previous one's line numbers; the history is written by IPython's thread, so wait for it.
    wait = "import time\nfrom IPython import get_ipython\nhm = get_ipython().history_manager\ntime.sleep(0.3)\n"
    names = [notebook(tmp_path / f"{n}.ipynb", wait, "print(1)", "print(2)", wait) for n in "abc"]
    for name in names:
        assert run(pool, tmp_path, name).status == "ok"
        counts, text = outputs(tmp_path, name)
        assert counts == [1, 2, 3, 4, 5, 6], counts  # parameters, injected parameters, 4 cells
        assert "not unique" not in text and "ERROR" not in text, text
    assert pool.started == 1


@pytest.mark.slow
def test_kernels_do_not_inherit_the_dask_workers_malloc_setting(tmp_path, monkeypatch):
    # Dask's nanny gives its workers MALLOC_TRIM_THRESHOLD_=65536; a kernel that inherited it
    # trained the NumPy LSTM ~17% slower. Neither a warm kernel nor a fresh one may see it.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    probe = "import os\nprint('trim', os.environ.get('MALLOC_TRIM_THRESHOLD_'), os.environ.get('OMP_NUM_THREADS'))"
    name = notebook(tmp_path / "env.ipynb", probe)
    with S._kernel_pool() as warm:
        assert run(warm, tmp_path, name).status == "ok"
        assert "trim None 1" in outputs(tmp_path, name)[1]
    (tmp_path / f"out-{name}").unlink()
    with S._kernel_env():
        assert run(None, tmp_path, name).status == "ok"
    assert "trim None 1" in outputs(tmp_path, name)[1]
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # this process's own is put back


def test_a_warm_kernels_heap_is_frozen_and_its_garbage_still_collected(tmp_path):
    # IPython's reset collects garbage: with torch, pandas and matplotlib loaded a full collection
    # took 0.18 s before every notebook. What the kernel had before the notebook is frozen
    # (gc.freeze), a prestarted kernel's imports included; a notebook's own cyclic garbage is
    # still collected by the next reset.
    probe = ("import gc, weakref\nprint('frozen', gc.get_freeze_count())\n"
             "class Cycle: pass\n"
             "c = Cycle(); c.me = c; __builtins__.__dict__['_dino_probe'] = weakref.ref(c); del c")
    check = "import gc\nprint('frozen', gc.get_freeze_count(), 'cycle alive', _dino_probe() is not None)"
    a, b = notebook(tmp_path / "a.ipynb", probe), notebook(tmp_path / "b.ipynb", check)
    with S._kernel_pool() as pool:
        pool.prestart(str(tmp_path), "import json")
        assert run(pool, tmp_path, a).status == "ok"
        frozen = int(outputs(tmp_path, a)[1].split()[1])
        assert frozen > 10_000  # the kernel's own objects (IPython, the imports): not walked again
        assert run(pool, tmp_path, b).status == "ok"
        assert "cycle alive False" in outputs(tmp_path, b)[1]  # collected at the reset, not frozen
        assert pool.started == 1


def test_the_executed_notebook_is_written_once_when_it_ends_run_or_failed(tmp_path, pool, monkeypatch):
    """papermill writes the executed notebook as every cell starts and ends; a study's task runs
    in a folder nobody watches, so the study's engine writes it once, when the notebook ends (its
    manager's save), and a failed notebook's file still shows the failing cell's traceback."""
    import papermill.engines

    writes = []
    real = papermill.engines.write_ipynb
    monkeypatch.setattr(papermill.engines, "write_ipynb", lambda nb, path: (writes.append(path), real(nb, path)))
    ok = notebook(tmp_path / "ok.ipynb", "print(1)", "print(2)", "print(3)")
    assert run(pool, tmp_path, ok).status == "ok"
    assert len(writes) == 1 and outputs(tmp_path, ok)[1] == "1\n2\n3\n"
    writes.clear()
    bad = notebook(tmp_path / "bad.ipynb", "print('before')", "raise RuntimeError('the cell failed')", "print('after')")
    job = run(pool, tmp_path, bad)
    assert job.status == "failed" and "the cell failed" in job.message
    assert len(writes) == 1
    code = [c for c in json.loads((tmp_path / "out-bad.ipynb").read_text())["cells"] if c["cell_type"] == "code"]
    assert ["".join(o.get("text") or o.get("ename")) for c in code for o in c["outputs"]] == ["before\n", "RuntimeError"]

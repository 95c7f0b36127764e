"""dino_rnn: a reproducible comparison of character-level recurrent language models.

The core, in the order a reader meets it (what the notebooks import)::

    settings    every setting of a run, one name each (the notebook's parameter lower-cased)
    data        the names file, normalisation, vocabulary, one-hot, the split
    models      four models behind one interface (build_model); numpy_nets: two in NumPy
    train       the training loop in view: Step (forward, loss, backward, update), the epoch loop
    sample      one generate for every model
    plots       one run's learning curves
    experiment  one notebook's whole run, and what it writes (Experiment)
    anbn, lab   the NumPy lab: the aⁿbⁿ task and its runs

Around it: ``fast/`` (the compiled path behind train.make_step), ``runner/`` (dino-rnn study,
sweep, bench: papermill, Dask, results folders), ``report/`` (tables, plots, the HTML site,
the claims). ``from dino_rnn import Experiment`` loads the core only.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Experiment":  # imported on first use: `import dino_rnn` (the CLI's --version) loads no torch
        from dino_rnn.experiment import Experiment

        return Experiment
    raise AttributeError(f"module 'dino_rnn' has no attribute {name!r}")


__all__ = ["Experiment", "__version__"]

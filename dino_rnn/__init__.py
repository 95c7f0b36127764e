"""dino_rnn: a reproducible comparison of character-level recurrent language models.

Modules, in the order a reader meets them:

- :mod:`dino_rnn.data`    – the names file, normalisation, vocabulary, one-hot, the split
- :mod:`dino_rnn.models`  – four models behind one interface (``build_model``)
- :mod:`dino_rnn.train`   – the published training protocol (AdamW, one step per name)
- :mod:`dino_rnn.sample`  – one ``generate`` for every model
- :mod:`dino_rnn.experiment` – one notebook's whole run, and what it writes
- :mod:`dino_rnn.report.tables`  – the comparison table and plots
- :mod:`dino_rnn.runner.study`   – the papermill runner behind ``dino-rnn study``
"""

__version__ = "0.1.0"

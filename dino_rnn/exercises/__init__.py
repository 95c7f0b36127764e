"""The teaching edition: exercises with checks that say what is wrong.

Two notebooks hold exercises, ``05_anbn_lab`` (the NumPy lab) and ``01_rnn_from_scratch``. An
exercise is a code cell that defines one function of the package, whose body is marked with
nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION``, and the check cell after it. The
function's source *is* the package's (a test keeps the two equal), so there is one copy of every
solution: the code that trains.

    base       what every check shares: ExerciseError, comparing arrays, the catalogue of mistakes
    lab        the checks of notebook 05 (the NumPy RNN and LSTM, clipping, SGD, Adam, extrapolation)
    scratch    the checks of notebook 01 (the nn.Linear cell, one training step, the sampling loop)
    notebooks  ``dino-rnn exercises``: the student notebooks (every solution a stub) and the solutions

A notebook imports ``from dino_rnn.exercises import lab as check`` and calls
``check.rnn_forward(rnn_forward)``: the check runs the function on small random inputs, against
the package's own and finite differences, and either says it passed or raises
:class:`~dino_rnn.exercises.base.ExerciseError` with what is wrong and its likely cause.
"""

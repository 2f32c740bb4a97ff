"""The one base of the errors that the command line reports as one line (``cli.main``).

Each stage defines its own error class (``midi.MidiError``, ``train.TrainingError``, ...) with this
as a base beside its built-in one, so that ``cli.main`` catches them all without importing every
stage: a render does not load the training or evaluation code just to name their errors.
"""

from __future__ import annotations


class PianosynthError(Exception):
    """Bad input or a state the user can fix: reported as one line, without a traceback."""

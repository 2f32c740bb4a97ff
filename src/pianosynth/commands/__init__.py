"""Each command's work, one module per stage, under the argument parsing in ``cli.py``.

These are the only modules besides ``cli.py`` that print: they call the library, report what it did
and turn a user's mistake into a ``UserError`` (one line on stderr, non-zero exit).
"""

from __future__ import annotations

import sys

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """An error to report as one line, without a traceback."""


def progress(desc: str):
    """A progress callback over files for ``dataset.prepare``: (iterator, total) -> iterator."""

    def wrap(iterator, total):
        from tqdm import tqdm

        return tqdm(iterator, total=total, desc=desc, unit="file", dynamic_ncols=True, file=sys.stderr)

    return wrap


def limits(args):
    """The job's budget (``midi.Limits``) from the repeatable ``--limit NAME=VALUE`` options."""
    from ..midi import Limits, MidiError

    try:
        return Limits.parse(getattr(args, "limits", []))
    except MidiError as e:
        raise UserError(str(e)) from None


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)

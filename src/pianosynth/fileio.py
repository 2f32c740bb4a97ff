"""Writing files so that a kill, Ctrl-C or a full disk never leaves a half-written one in place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """Calls ``write(tmp_path)`` on a hidden temporary name beside ``path``, then renames it into
    place: ``path`` is either the old file or the whole new one. ``suffix`` is appended to the
    temporary name for writers that infer the format from it. The temporary file is removed if
    ``write`` fails. Temporary names match ``.*.tmp*`` (prepare cleans those up on resume).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

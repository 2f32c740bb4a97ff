"""Writing files so that a kill, Ctrl-C or a full disk never leaves a half-written one in place."""

from __future__ import annotations

import os
import re
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


_TEMP_NAME = re.compile(r"^\..+\.(?:tmp|raw)(\d+)")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Removes the hidden temporary files (``.NAME.tmp<pid>*``, ``.NAME.raw<pid>*``) that a killed
    process left in ``folder``; files of a process still running are kept. Returns what it removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = _TEMP_NAME.match(path.name)
        if m and path.is_file() and not pid_alive(int(m.group(1))):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass  # not ours to remove (permissions); it does no harm
    return removed

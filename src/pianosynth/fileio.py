"""Writing files so that a kill, Ctrl-C or a full disk never leaves a half-written one in place,
and nothing that is not ours is ever deleted or followed (issue 20).

A temporary file is made by ``tempfile.mkstemp`` in the target's folder: an unpredictable name,
created with ``O_CREAT | O_EXCL``, so a file or a symlink planted under that name in advance makes
the creation fail instead of being written through. Its name carries the writing process's id and
the marker ``TEMP_MARKER`` (``.NAME.<pid>.pianosynth-tmp-<random><suffix>``): a user's file does
not carry it by accident, so ``remove_stale_temps`` removes only such files, only when that
process has gone, and never a symlink. ``.thesis.tmp1999.docx`` beside ``song.mid`` is not ours.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterator

TEMP_MARKER = "pianosynth-tmp-"
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\." + re.escape(TEMP_MARKER) + r"[A-Za-z0-9_]{6,}")


def temp_path(path: str | Path, suffix: str = "") -> Path:
    """Creates an empty, hidden temporary file beside ``path`` (mode 0600, ``O_EXCL``) and
    returns its name. ``suffix`` ends the name, for writers that infer the format from it."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.{TEMP_MARKER}", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def replacing(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """``with replacing(path) as tmp:`` write ``tmp``; on a clean exit it is renamed to ``path``
    (which is then either the old file or the whole new one); on an error it is removed."""
    path = Path(path)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.chmod(tmp, _final_mode(path))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_symlink() or tmp.exists():  # ours: made by temp_path above
                tmp.unlink()


def _final_mode(path: Path) -> int:
    """The mode the finished file gets: an existing regular file's own, else what ``open`` would
    give a new file (0o666 less the umask). The temporary file's 0600 is for while it is being
    written: kept after the rename, it made every render unreadable to the user's other programs
    and users (a web server, a shared folder)."""
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status);
    elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # the strictest while it is set, should another thread create a file meanwhile
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """Calls ``write(tmp_path)`` on a fresh temporary name beside ``path`` (``temp_path``), then
    renames it into place: ``path`` is either the old file or the whole new one. The temporary
    file is removed if ``write`` fails."""
    with replacing(path, suffix) as tmp:
        write(tmp)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of our temporary names (``temp_path``)."""
    return _TEMP_NAME.match(name) is not None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Removes the temporary files (``temp_path``) that a killed process left in ``folder``: only
    regular files (never a symlink) whose name carries ``TEMP_MARKER`` and the id of a process
    that no longer runs. Returns what it removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = _TEMP_NAME.match(path.name)
        if m is None:
            continue
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode) or pid_alive(int(m.group(1))):
                continue
            path.unlink()
            removed.append(path)
        except OSError:
            pass  # gone meanwhile, or not ours to remove (permissions): it does no harm
    return removed


def file_sha1(path: str | Path) -> str:
    """SHA-1 of a file's bytes, read in 1 MiB blocks: the identity of a source, a cached array,
    a shipped model or a sample."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

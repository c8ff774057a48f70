"""Reading what a store holds without trusting it: regular files only, never followed, size-capped.

A record names paths and a run folder holds files a labmate (or a broken copy)
may have replaced: a symbolic link to ``/dev/zero`` exhausts memory, a FIFO
blocks the reader forever, a link out of the store reads someone else's file.
Every store reader goes through ``read_regular``: the last path component is
opened without following a link (``O_NOFOLLOW``) and without blocking
(``O_NONBLOCK``: a FIFO opens at once), and only a regular file within the
size limit is read. ``printable`` escapes the control characters of text a
store holds before a terminal shows it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from study.errors import StudyError

RECORD_LIMIT = 64 << 20  # record.json, CSVs: their largest real size is a few MB
FILE_LIMIT = 16 << 30  # model and checkpoint files: the largest baseline's is a few hundred MB


class UnsafeFile(StudyError):
    """A path of the store that is not a plain regular file of a sane size."""


def open_regular(path: Path, limit: int = FILE_LIMIT) -> int:
    """A read-only descriptor of ``path`` if it is a regular file of at most ``limit`` bytes, never
    through a link; UnsafeFile (FileNotFoundError for a missing file) otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeFile(f"{path}: a symbolic link; the store reads only its own regular files") from None
        raise UnsafeFile(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{path}: not a regular file (a device, FIFO, socket or folder); expected a file "
                             "the harness wrote")
        if info.st_size > limit:
            raise UnsafeFile(f"{path}: {info.st_size} bytes, over the limit of {limit} for this kind of file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, limit: int = RECORD_LIMIT) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see ``open_regular``)."""
    fd = open_regular(path, limit)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise UnsafeFile(f"{path}: over the limit of {limit} bytes")
    return data


def tail_regular(path: Path, max_bytes: int = 64 << 10) -> bytes:
    """At most the last ``max_bytes`` of a regular file of any size."""
    fd = open_regular(path, FILE_LIMIT)
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - max_bytes))
        return fh.read(max_bytes)


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, every link resolved, lies inside ``folder`` (also resolved)."""
    try:
        real, base = os.path.realpath(path), os.path.realpath(folder)
    except (OSError, ValueError):
        return False
    return os.path.commonpath([real, base]) == base and real != base


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab shown as an escape (``\\x1b``)."""
    import unicodedata

    out = []
    for ch in text:
        if ch in "\n\t" or not unicodedata.category(ch).startswith("C"):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def is_linked_folder(path: Path) -> bool:
    return Path(path).is_symlink()

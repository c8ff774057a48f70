"""Writing a store's files so that no reader sees a torn one.

Every file is written to a temporary name in its folder, flushed to disk and
renamed over the old one: a killed writer leaves the previous version intact.
Files get the permissions of the process's umask (mkstemp would make them
private), so a lab sharing the store can read them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from study.errors import StudyError


class StoreWriteError(StudyError):
    """A file of the store could not be written (disk full, permissions, ...); nothing was torn."""


def probe_writable(folder: Path) -> None:
    """Create ``folder`` if missing and write and remove a file in it: OSError where this process cannot."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    os.close(fd)
    os.unlink(probe)


def require_writable(folder: Path, what: str) -> None:
    """Refuse, before any work, a folder this process cannot write (created if missing): one line."""
    folder = Path(folder)
    try:
        probe_writable(folder)
    except OSError as exc:
        raise StoreWriteError(f"{folder}: {what} is not writable ({exc.strerror or exc}); nothing was done. Point "
                              "--results (or --out) at a folder you can write") from None


def current_umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the only other way, and put it back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600: a lab's store is shared
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise StoreWriteError(f"{path}: cannot write ({exc.strerror or exc}); the previous version, "
                              "if any, is intact") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(path: Path, obj) -> None:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())

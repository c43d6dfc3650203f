"""Crash-safe file replacement, for every file this package writes that others read back
(training checkpoints, saved meta-models, the CIFAR-10 cache, G.pt shards and indexes).

    atomic_write(path, lambda tmp: torch.save(state, tmp))

The content goes to a uniquely named temporary file beside `path`, is flushed to disk,
then renamed over `path`: a reader (or a run resumed after a crash) sees the old file or
the new one, whole, never a torn one.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Replace `path` with what ``write(tmp)`` writes to the temporary path `tmp`; returns
    `path`. If `write` raises, `path` is untouched and the temporary file removed.

    The result has the usual permissions of a new file (0o666 less the umask), so it is as
    shareable as a plainly written one; its name is unique
    per call, so concurrent writers of one path (e.g. an orphaned worker of a killed run)
    never write into each other's file: the last rename wins, whole.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)  # what the umask made of 0o666, read without changing it
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # writers that recreate the file (safetensors does) make it owner-only
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if os.name == "posix":  # persist the rename itself (directories cannot be opened on Windows)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path

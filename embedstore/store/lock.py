"""One writing process per store: an advisory lock file beside the store, released when the process ends.

Two `embed extract` runs on one store would race to create the same arrays; the second one is refused
with a one-line message instead (the first one's work is kept, and the same command resumes later).
The lock lives beside the store (``<store>.lock``), not inside it, so the store holds only zarr files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from embedstore.errors import EmbedstoreError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, writers are not guarded
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def store_lock(location: str | Path) -> Iterator[None]:
    """Hold ``<location>.lock`` while writing; refuse at once when another process holds it.

    An ``s3://`` store has no advisory locks: nothing is held, and one driver per remote store is the
    user's rule (docs/distributed.md). Its chunks are still safe: one writer per shard, objects written whole.
    """
    if "://" in str(location):
        yield
        return
    path = Path(str(location).rstrip("/") + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
                raise EmbedstoreError(f"{location}: another `embed extract` (pid {holder}) is writing this store; "
                                      "wait for it to finish (the same command then resumes)") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)

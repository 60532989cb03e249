"""Files written whole or not at all: write to a unique temporary sibling, then rename.

Every output of the project (result units, cache entries, figures, tables, maps)
goes through :func:`write_atomically`, so a reader never sees a torn file and
concurrent writers of the same path cannot corrupt it. Temporary names start
with a dot (ignored by our readers and by pyarrow datasets) and keep the
target's suffix, which some writers (``np.savez``, ``savefig``) go by.
"""

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """``.<stem>.<pid>.<random>.partial<suffix>`` beside ``path``: unique per writer."""
    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


def write_atomically(path: Path, write: Callable[[Path], object], *, stale_before: float | None = None) -> Path:
    """Call ``write(temporary)``, flush it to disk, then rename it to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was.
    stale_before: a time.time() at which the caller started computing what it writes;
    then leftover temporary siblings of ``path`` older than that are removed afterwards
    (see :func:`remove_stale_siblings`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_sibling(path)
    try:
        write(partial)
        with open(partial, "rb") as handle:  # durable before it becomes visible
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if stale_before is not None:
        remove_stale_siblings(path, stale_before)
    return path


def remove_stale_siblings(path: Path, before: float) -> None:
    """Remove temporary siblings of ``path`` last modified before ``before``.

    They come from a writer killed mid-write (SIGKILL, a node lost): a live writer's
    temporary file is written within moments, so it is newer than the start of the
    computation that has just finished writing the same path. Readers ignore them
    either way; this keeps a resumed run's folders clean.
    """
    for leftover in path.parent.glob(f".{path.stem}.*.partial*"):
        try:
            if leftover.stat().st_mtime < before:
                leftover.unlink()
        except FileNotFoundError:
            pass  # another writer cleaned it first

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


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary)``, flush it to disk, then rename it to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was.
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
    return path

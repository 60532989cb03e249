"""Progress of long work inside one image: member channels, ROAD masks.

Library code reports to a :class:`Progress` (a no-op by default); ``metacam explain``
passes a :class:`TqdmProgress`, which shows one bar per stage with done / total and
an ETA on stderr.
"""

from __future__ import annotations


class Progress:
    """Receives progress; this base class ignores it."""

    def stage(self, name: str, total: int) -> None:
        """A stage of ``total`` units of work begins (e.g. "ROAD masks", 640)."""

    def advance(self, count: int = 1) -> None:
        """``count`` more units of the current stage are done."""

    def close(self) -> None:
        """No more stages."""


class TqdmProgress(Progress):
    """One tqdm bar per stage (label, done / total, rate, ETA), left on screen when done."""

    def __init__(self, prefix: str = "", *, disable: bool = False) -> None:
        self.prefix = prefix
        self.disable = disable
        self._bar = None

    def stage(self, name: str, total: int) -> None:
        from tqdm import tqdm

        self.close()
        label = f"{self.prefix}{name}" if self.prefix else name
        self._bar = tqdm(total=total, desc=label, unit="", leave=False, disable=self.disable,
                         dynamic_ncols=True, mininterval=0.5)

    def advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


NO_PROGRESS = Progress()

"""A stopwatch for training compute that leaves out ``kill -STOP`` pauses.

Long CPU runs are paused with SIGSTOP (``kill -STOP``, Ctrl-Z) to free the cores for an
evaluation; wall time would then count the pause as training. A process gets SIGCONT when it
resumes, so while the stopwatch is entered it catches that signal and an interval that saw a
resume counts only from it: of each pause, at most the part of one interval before the stop is
counted.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any


class Stopwatch:
    """Seconds of compute between :meth:`start` and :meth:`stop` (or :meth:`lap`), pauses left out.

    Use it as a context manager, which installs the SIGCONT handler and restores the previous
    one on exit::

        with Stopwatch() as watch:
            for batch in data:
                watch.start()
                step(batch)
                seconds += watch.stop()

    Where the signal cannot be caught (Windows, or off the main thread) pauses are counted.
    """

    def __init__(self) -> None:
        self._since: float | None = None
        self._resumed: float | None = None
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> Stopwatch:
        if hasattr(signal, "SIGCONT") and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGCONT, self._on_resume)
            self._installed = True
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGCONT, self._previous)
            self._installed = False

    def _on_resume(self, signum: int, frame: FrameType | None) -> None:
        self._resumed = time.perf_counter()

    def start(self) -> None:
        """Start an interval."""
        self._since = time.perf_counter()

    def stop(self) -> float:
        """End the interval and return its seconds, counted from its start or from the last
        resume in it, whichever is later."""
        seconds = self.lap()
        self._since = None
        return seconds

    def lap(self) -> float:
        """Like :meth:`stop`, but start the next interval at the same instant, so that nothing
        between the two goes uncounted."""
        if self._since is None:
            raise RuntimeError("Stopwatch.stop() or lap() before start()")
        now = time.perf_counter()
        since = self._since if self._resumed is None else max(self._since, self._resumed)
        self._since = now
        return now - since

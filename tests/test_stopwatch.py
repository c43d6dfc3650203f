"""The compute stopwatch: a pause ended by SIGCONT is left out, the previous handler comes back."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from ghn.stopwatch import Stopwatch

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGCONT"), reason="no SIGCONT on this platform")


def _pause(seconds: float) -> None:
    """What a process sees of ``kill -STOP`` then ``kill -CONT``: time passes, then SIGCONT."""
    time.sleep(seconds)
    os.kill(os.getpid(), signal.SIGCONT)


def test_an_interval_with_a_pause_counts_from_the_resume() -> None:
    previous = signal.getsignal(signal.SIGCONT)
    with Stopwatch() as watch:
        watch.start()
        _pause(1.0)
        time.sleep(0.2)
        paused = watch.stop()
        watch.start()
        time.sleep(0.2)  # a later interval without a pause counts whole
        plain = watch.stop()
    assert 0.2 <= paused < 0.6, paused
    assert 0.2 <= plain < 0.6, plain
    assert signal.getsignal(signal.SIGCONT) == previous


def test_laps_leave_out_only_the_pause() -> None:
    with Stopwatch() as watch:
        watch.start()
        time.sleep(0.2)
        first = watch.lap()
        _pause(1.0)
        second = watch.lap()
        time.sleep(0.2)
        third = watch.lap()
    assert first >= 0.2 and second < 0.1 and third >= 0.2, (first, second, third)


def test_off_the_main_thread_pauses_count() -> None:
    """signal.signal works only on the main thread; elsewhere the watch still times, pauses included."""
    seconds: list[float] = []

    def run() -> None:
        with Stopwatch() as watch:
            watch.start()
            time.sleep(0.3)
            seconds.append(watch.stop())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seconds and seconds[0] >= 0.3


def test_stop_before_start_is_an_error() -> None:
    with Stopwatch() as watch, pytest.raises(RuntimeError, match="before start"):
        watch.stop()

"""ghn.atomic.atomic_write: all of the new file or all of the old one, never a torn or stray file."""

from __future__ import annotations

import os
import stat

import pytest

from ghn.atomic import atomic_write


def test_replaces_the_file_with_the_permissions_of_a_new_one(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    previous = os.umask(0o027)
    try:
        assert atomic_write(path, lambda tmp: tmp.write_text("new")) == path
    finally:
        os.umask(previous)
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 less the umask, not owner-only
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_text("old")

    def torn(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, torn)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]

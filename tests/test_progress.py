"""Progress bars: on a terminal by default, forced on or off by AXPO_PROGRESS."""

from __future__ import annotations

import pytest

from tasks.progress import Steps, progress, progress_enabled


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("on", True), ("0", False), ("off", False)])
def test_axpo_progress_forces_the_choice(monkeypatch, value, expected):
    monkeypatch.setenv("AXPO_PROGRESS", value)
    assert progress_enabled() is expected


def test_auto_follows_whether_stderr_is_a_terminal(monkeypatch):
    monkeypatch.delenv("AXPO_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert progress_enabled() is False


def test_bars_count_items_and_named_steps(monkeypatch, capsys):
    monkeypatch.setenv("AXPO_PROGRESS", "1")
    assert list(progress(range(3), desc="rounds")) == [0, 1, 2]
    steps = Steps("pipeline", total=2)
    with steps.step("SFT"):
        pass
    with steps.step("evaluate"):
        pass
    steps.close()
    err = capsys.readouterr().err
    assert "rounds: 100%" in err and "3/3" in err
    assert "pipeline: 100%" in err and "2/2" in err and "evaluate" in err


def test_off_writes_nothing(monkeypatch, capsys):
    monkeypatch.setenv("AXPO_PROGRESS", "0")
    assert list(progress([1, 2], desc="quiet")) == [1, 2]
    assert capsys.readouterr().err == ""

"""Quiet mode: what a model runtime's processes print while starting goes to the library log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synth.engines.base import LIBRARY_LOG_ENV, output_to_library_log


def _child(text: str) -> subprocess.Popen:
    code = f"import sys; print({text!r}); print({text + ' err'!r}, file=sys.stderr)"
    return subprocess.Popen([sys.executable, "-c", code])


def test_processes_started_inside_write_to_the_log_and_this_one_gets_its_output_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "dataset" / "library.log"
    monkeypatch.setenv(LIBRARY_LOG_ENV, str(log))
    with output_to_library_log():
        child = _child("native notice")
        child.wait()
    late = _child("after")  # started outside: the terminal's
    late.wait()
    print("ours")
    out, err = capfd.readouterr()
    assert log.read_text().splitlines() == ["native notice", "native notice err"]
    assert "native notice" not in out + err
    assert out.splitlines() == ["after", "ours"] and err.splitlines() == ["after err"]


def test_without_a_log_nothing_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(LIBRARY_LOG_ENV, raising=False)
    with output_to_library_log():
        _child("shown").wait()
    out, err = capfd.readouterr()
    assert out.splitlines() == ["shown"] and err.splitlines() == ["shown err"]
    assert list(tmp_path.iterdir()) == []

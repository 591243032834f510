"""What a run tells its watchers after each batch, and the terminal's progress bars built on it."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from synth.cli.output import live_progress, progress_status
from synth.engines import ScriptedEngine
from synth.flows.common import RunProgress, watching
from synth.flows.self_instruct import run_self_instruct
from synth.schemas import DatasetConfig, ScriptedEngineConfig, SelfInstructConfig
from tests.conftest import SelfInstructScript

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(path):
    return run_self_instruct(
        SelfInstructConfig(num_records=12, prompts_per_batch=2, include_seed_tasks=False),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(path)),
        model=ScriptedEngine(SelfInstructScript()),
    )


def test_watchers_hear_every_batch_and_the_last_word_matches_the_summary(tmp_path):
    heard: list[RunProgress] = []
    with watching(heard.append):
        summary = run(tmp_path / "ds")
    assert len(heard) == summary["batches"]
    assert [p.fraction for p in heard] == sorted(p.fraction for p in heard)
    last = heard[-1]
    assert (last.run_id, last.generator, last.kept, last.rejected) == (
        summary["run_id"], "self_instruct", summary["kept"], summary["rejected"],
    )  # fmt: skip
    assert sum(last.rejects_by_stage.values()) == summary["rejected"]
    assert last.fraction == 1.0
    # once out of the block nobody is told
    run(tmp_path / "other")
    assert len(heard) == summary["batches"]


def test_status_line_names_kept_rejects_by_stage_speed_and_time_left():
    status = progress_status(RunProgress("r", "evol_instruct", 0.5, 1200, 30, {"heuristic": 20, "dedup": 10}, 80, 41.6))
    assert status == "1,200 kept, 30 rejected (heuristic 20, dedup 10), 42 tokens/s, about 80 s left"
    assert progress_status(RunProgress("r", "g", 0.0, 0, 0, {}, None, None)) == "0 kept, 0 rejected"


def test_a_terminal_shows_a_bar_per_run_and_anything_else_shows_none(tmp_path):
    screen = io.StringIO()
    with live_progress(Console(file=screen, force_terminal=True, width=160)):
        summary = run(tmp_path / "ds")
    shown = screen.getvalue()
    assert "self_instruct" in shown and "100%" in shown and f"{summary['kept']} kept" in shown
    log = io.StringIO()
    with live_progress(Console(file=log, force_terminal=False)):
        run(tmp_path / "ds2")
    assert log.getvalue() == ""


def test_prints_inside_prints_not_logged_skip_the_run_log(capsys, monkeypatch):
    from prefect import flow

    import synth.flows.common as common

    logged: list[str] = []

    class Logger:
        def info(self, message, *args, **kwargs):
            logged.append(str(message))

    monkeypatch.setattr("prefect.logging.loggers.get_run_logger", lambda *a, **k: Logger())

    @flow(log_prints=True)
    def talk() -> None:
        print("to the log")
        with common.prints_not_logged():
            print("to the screen")
        print("to the log again")

    talk()
    assert "to the screen" in capsys.readouterr().out
    assert [line.strip() for line in logged] == ["to the log", "to the log again"]

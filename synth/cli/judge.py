"""`synth judge-check`: how well the curation judge tells good responses from bad ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from synth.cli.checks import check_dataset, preflight
from synth.cli.errors import fail
from synth.cli.options import EngineOpt, load_curation, load_engine, path_argument, path_option, where
from synth.cli.output import console, table
from synth.flows import api

if TYPE_CHECKING:
    from synth.evaluation.calibration import CalibrationReport, ScoreGroup


def judge_check(
    labelled: Annotated[
        Path | None,
        path_argument(
            "FILE",
            help="JSONL of responses with instruction, input (optional), output, label (1 good, 0 bad) and "
            "defect (optional). Default: the built-in set (the seed tasks' answers, and each with a planted defect).",
        ),
    ] = None,
    curation: Annotated[
        Path | None,
        path_option("--curation", help="Curation config whose judge settings (rubric, threshold, sampling) to check."),
    ] = None,
    language: Annotated[str, typer.Option("--language", help="The built-in set's language (en, zh).")] = "en",
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=2, help="Grade only the first N responses (the built-in set pairs them)."),
    ] = None,
    engine_config: EngineOpt = None,
    out: Annotated[Path | None, path_option("--out", help="Also write the report as JSON to this file.")] = None,
    dataset: Annotated[
        Path | None,
        path_option(
            "--dataset",
            help="A dataset this judge curates: the report is kept beside its manifest (judge_calibration.json) "
            "and its card shows it.",
        ),
    ] = None,
) -> None:
    """Grade responses of known quality with the judge and report how well its scores separate good
    from bad: ROC AUC, agreement at the curation threshold, and the scores per label and per defect."""
    from synth.evaluation.calibration import built_in_set, read_labelled

    api.prepare_process(None)
    config = load_curation(curation)
    if language not in ("en", "zh") and labelled is None:
        fail(f"--language {language!r}: the built-in set is in en or zh; give a FILE for another language")
    items = read_labelled(labelled) if labelled is not None else built_in_set(language)
    items = items[:limit] if limit is not None else items
    if len({i.label for i in items}) < 2:
        fail(f"--limit {limit}: the first {len(items)} responses hold only one label; give a larger limit")
    if out is not None and out.is_dir():
        fail(f"--out {out}: is a folder; give a file name")
    if dataset is not None:
        check_dataset(dataset)
    if config.judge.rubric and not Path(config.judge.rubric).is_file():
        fail(f"{where(curation)}judge.rubric: {config.judge.rubric}: no such file")
    engine = load_engine(engine_config)
    preflight(None, [(engine, where(engine_config))], config, where(curation), flow=False)
    report = api.judge_check(items, config.judge, engine)
    report["source"] = str(labelled) if labelled is not None else f"built-in ({language})"
    print_judge_check(report)
    text = (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if out is not None:
        out.write_bytes(text)
        console.print(f"report written to {out}")
    if dataset is not None:
        from synth.shards.atomic import atomic_write_bytes
        from synth.shards.card import CALIBRATION_FILE, write_card
        from synth.shards.layout import read_manifest

        atomic_write_bytes(dataset / CALIBRATION_FILE, text)
        write_card(dataset, read_manifest(dataset))
        console.print(f"kept with the dataset: {dataset / CALIBRATION_FILE} (its card shows it)")


def print_judge_check(report: CalibrationReport) -> None:
    auc = "n/a" if report["auc"] is None else f"{report['auc']:.3f}"
    agreement = "n/a" if report["agreement"] is None else f"{report['agreement']:.1%}"
    console.print(
        f"{report.get('source', 'labelled set')}: {report['responses']} responses, {report['unparseable']} unparseable; "
        f"ROC AUC {auc} (0.5 is chance); agreement at threshold {report['threshold']}: {agreement}"
    )
    groups: list[tuple[str, ScoreGroup]] = [("good", report["by_label"]["good"]), ("bad", report["by_label"]["bad"])]
    groups += [(f"  {kind}", g) for kind, g in report["by_defect"].items()]
    rows = [
        {"responses": name, "n": g["n"], "mean score": g["mean"], **g["scores"], "dropped": g["dropped"]}
        for name, g in groups
    ]
    console.print(table("Scores", rows, ["responses", "n", "mean score", "1", "2", "3", "4", "5", "dropped"]))

"""What the commands print: run summaries, funnels, tables and reports. Data (record text, paths,
reasons) is printed literally, never read as Rich markup, and its control characters are shown
escaped (`synth.text.printable`), so an escape sequence in a record never drives the terminal."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from synth.text import printable

if TYPE_CHECKING:
    from synth.flows.backtranslation import BacktranslationSummary
    from synth.flows.common import RunProgress
    from synth.flows.curate import CurateFileSummary
    from synth.flows.evol_instruct import EvolInstructSummary
    from synth.flows.self_training import SelfTrainingSummary
    from synth.schemas import QuarantineEntry
    from synth.schemas.runs import RunSummary
    from synth.shards.repair import Report
    from synth.shards.summary import DatasetSummary

console = Console()
err = Console(stderr=True)


def escape_log_records() -> None:
    """From now on every log record of this process carries its message with control characters
    escaped (`printable`): log lines quote file names, reasons and server replies, which may hold
    an escape sequence, and Prefect's handlers print them on the terminal. Once per process."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "synth_printable", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is logging's to report, when the record is handled
            return record
        if (shown := printable(message)) != message:
            record.msg, record.args = shown, None
        return record

    factory.synth_printable = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def table(title: str, rows: Sequence[Mapping[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> Text:
    """A table cell printed as it is: record text such as `[/INST]` is not Rich markup, and an
    escape sequence is shown, not obeyed."""
    if isinstance(value, float):
        return Text(f"{value:.2f}")
    return Text("" if value is None else printable(value))


def progress_status(p: RunProgress) -> str:
    """One line on a run's progress: kept, rejects (the largest stages), tokens/s, time left."""
    from synth.flows.common import duration

    stages = sorted(p.rejects_by_stage.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    status = f"{p.kept:,} kept, {p.rejected:,} rejected"
    if stages:
        status += " (" + ", ".join(f"{stage} {n:,}" for stage, n in stages) + ")"
    if p.tokens_per_second is not None:
        status += f", {p.tokens_per_second:,.0f} tokens/s"
    if p.seconds_left is not None:
        status += f", about {duration(p.seconds_left)} left"
    return status


@contextmanager
def live_progress(out: Console | None = None) -> Iterator[None]:
    """A progress bar per run while the block runs, on a terminal only (elsewhere the runs' log
    lines say the same, one per batch). Prefect's log lines print above the bars meanwhile."""
    out = out or console
    if not out.is_terminal:
        yield
        return
    from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

    from synth.flows.common import watching

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        console=out,
    )
    tasks: dict[str, TaskID] = {}

    def show(p: RunProgress) -> None:
        if p.run_id not in tasks:
            tasks[p.run_id] = bars.add_task(p.generator, total=1.0, status="")
        bars.update(tasks[p.run_id], completed=p.fraction, status=progress_status(p))

    handlers = [h for h in _prefect_console_handlers() if hasattr(h, "console")]
    kept = [h.console for h in handlers]
    for handler in handlers:
        handler.console = out  # through the live display's console, so lines land above the bars
    try:
        with bars, watching(show):
            yield
    finally:
        for handler, own in zip(handlers, kept, strict=True):
            handler.console = own


def _prefect_console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    names = ["prefect", *(n for n in logging.root.manager.loggerDict if n.startswith("prefect."))]
    found: list[logging.Handler] = []
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and handler not in found:
                found.append(handler)
    return found


def print_summary(summary: RunSummary) -> None:
    """Records kept, rejects by stage and reason, and where the shards are (data printed literally);
    with why a run towards a target stopped, and a Self-Instruct run's seed-task run, where the
    summary has them."""
    own: Mapping[str, Any] = summary  # what the run's own summary type adds, read by name
    rejects = Table(title="Rejects by stage and reason", show_lines=False)
    rejects.add_column("stage")
    rejects.add_column("reason")
    rejects.add_column("count", justify="right")
    for stage, reasons in sorted(summary["rejects_by_reason"].items()):
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            rejects.add_row(Text(printable(stage)), Text(printable(reason)), str(n))
    console.print(rejects)
    path = Path(summary["dataset"])
    stopped = own.get("stopped") or "stopped before the target"
    status = "" if summary["reached_target"] else f" [yellow]({escape(stopped)})[/]"
    console.print(
        f"[bold green]{summary['kept']} records kept[/], {summary['rejected']} rejected, "
        f"in {summary['batches']} batches (run {escape(printable(summary['run_id']))}){status}"
    )
    if own.get("seed_run"):
        console.print(
            f"the seed tasks' own instances are in the dataset too: {own.get('seed_records', 0)} records "
            f"(run {escape(printable(own['seed_run']))}, tagged seed-data)"
        )
    if tokens := summary.get("tokens"):
        prompt = sum(t["prompt"] for t in tokens.values())
        completion = sum(t["completion"] for t in tokens.values())
        per = f", {(prompt + completion) / summary['kept']:,.0f} per kept record" if summary["kept"] else ""
        console.print(f"tokens: {prompt:,} prompt + {completion:,} completion{per}")
    if (use := summary.get("engine")) and use["wall_seconds"] > 0:
        how = "next batch made during curation" if use["pipelined"] else "batches made one after another"
        console.print(
            f"engine busy {use['busy_share']:.0%} of the batch loop, idle {use['idle_seconds_per_batch']:.1f} s "
            f"per batch ({how})"
        )
    console.print(
        Text(
            printable(
                f"shards: {path / 'data'}/*.parquet   rejects: {path / 'rejects'}/*.parquet   "
                f"manifest: {path / 'manifest.json'}"
            )
        )
    )


def print_profile(config: Any) -> None:
    """Say which profile a run used, and what it changed from the paper's settings."""
    changed = type(config).profile_changes(config.profile)
    if changed:
        console.print(
            Text(f"profile {config.profile}: not the paper's settings for {', '.join(sorted(changed))}", style="yellow")
        )


def print_evol_rounds(summary: EvolInstructSummary) -> None:
    """An Evol-Instruct run's funnel per round: instructions in, evolved, eliminated."""
    rows = [
        {"round": r, "in": f["in"], "evolved": f["evolved"], **{"eliminated": sum(f["eliminated"].values())}}
        for r, f in summary["rounds"].items()
    ]
    console.print(table("Rounds", rows, ["round", "in", "evolved", "eliminated"]))


def print_self_training(summary: SelfTrainingSummary) -> None:
    """The models a self-training run trained and used."""
    loop = summary["self_training"]
    console.print(Text(printable(f"backward model: {loop['backward_model']}")))
    for k, grader in enumerate(loop["graders"]):
        console.print(Text(printable(f"grader M{k}: {grader}")))
    console.print(Text(printable(f"iterations' candidates and models in {loop['work']}")))


def print_backtranslation_funnel(summary: BacktranslationSummary) -> None:
    """A backtranslation run's funnel: documents and segments used, seed pairs, grades per round."""
    funnel = summary["funnel"]
    console.print(
        f"documents {funnel.get('documents', 0)} (skipped {sum(funnel.get('documents_skipped', {}).values())}), "
        f"segments {funnel.get('segments', 0)} (dropped {sum(funnel.get('segments_dropped', {}).values())})"
    )
    if pairs := funnel.get("seeds"):
        skipped = ", ".join(f"{n} {reason}" for reason, n in pairs["skipped"].items())
        console.print(
            Text(
                printable(
                    f"seed pairs {pairs['used']} from {pairs['file']}" + (f" (skipped {skipped})" if skipped else "")
                )
            )
        )
    rows = [
        {
            "round": r,
            "graded": f["graded"],
            "unparseable": f["unparseable"],
            "kept": f["kept"],
            "scores": ", ".join(f"{s}: {n}" for s, n in sorted(f["scores"].items())),
        }
        for r, f in funnel.get("rounds", {}).items()
    ]
    console.print(table("Rounds", rows, ["round", "graded", "unparseable", "kept", "scores"]))


def print_curation(summary: CurateFileSummary) -> None:
    """What curation read, the benchmark items it found, and the run summary."""
    console.print(f"{summary['records_in']} records in")
    if summary["benchmark_hits"]:
        hits = [{"benchmark item": item, "records": n} for item, n in summary["benchmark_hits"].items()]
        console.print(table("Benchmark items hit", hits, ["benchmark item", "records"]))
    print_summary(summary)


def print_inspection(summary: DatasetSummary, show_rejects: bool) -> None:
    """A dataset's summary (`synth.shards.summary.summarize`) as tables."""
    console.print(
        f"[bold]{escape(printable(summary['path']))}[/]: [green]{summary['kept']} kept[/], {summary['rejected']} rejected "
        f"(keep rate {summary['keep_rate']:.1%})"
    )
    console.print(table("Runs", summary["runs"], ["run_id", "generator", "model", "status", "kept", "rejected"]))
    console.print(table("Funnel", summary["funnel"], ["phase", "stage", "reason", "count"]))
    console.print(table("Generators", summary["generators"], ["generator", "count"]))
    console.print(table("Lengths (words)", summary["lengths"], ["field", "mean", "p50", "p90", "max"]))
    console.print(table("Leading verbs", summary["leading_verbs"], ["verb", "count"]))
    for rows, title, column in (
        (summary["judge_scores"], "Judge scores", "judge_score"),
        (summary["evolution_rounds"], "Evolution rounds", "round"),
        (summary["languages"], "Languages", "language"),
        (summary["sources"], "Source documents", "source_doc"),
    ):
        if rows:
            console.print(table(title, rows, [column, "count"]))
    if summary["abilities"]:
        columns = ["ability", "count", *(["target"] if "target" in summary["abilities"][0] else [])]
        console.print(table("Abilities", summary["abilities"], columns))
    if summary["samples"]:
        console.print(table("Sample records", summary["samples"], ["instruction", "input", "output"]))
    if summary.get("recycled"):
        from synth.shards.summary import RECYCLED_COLUMNS

        console.print(table("Recycled records, before and after", summary["recycled"], RECYCLED_COLUMNS))
    if show_rejects and summary["reject_samples"]:
        console.print(table("Sample rejects", summary["reject_samples"], ["stage", "reason", "instruction", "detail"]))


def print_json(summary: Mapping[str, Any]) -> None:
    """`summary` as indented JSON on stdout, for scripts (no Rich formatting)."""
    print(json.dumps(summary, indent=2, default=str))


def print_check(path: Path, report: Report) -> None:
    """`synth verify`: each problem on stderr and what to do, or that everything matches."""
    for line in report.problems():
        err.print(escape(printable(line)), highlight=False, soft_wrap=True)
    if not report.ok:
        err.print(
            escape(
                printable(
                    f"{path}: {len(report.problems())} problem(s); `synth verify {path} --repair` sets them aside"
                )
            )
        )
        return
    console.print(escape(printable(f"{path}: {report.shards} shards, {report.rows} rows, all match the manifest")))


def print_repair(path: Path, report: Report, moved: list[QuarantineEntry]) -> None:
    """`synth verify --repair`: the problems found and each file set aside."""
    for line in report.problems():
        console.print(escape(printable(line)), highlight=False, soft_wrap=True)
    for entry in moved:
        console.print(
            escape(printable(f"set aside {entry.path} -> {entry.moved_to or '(was missing)'}: {entry.reason}"))
        )
    if report.manifest_error:
        console.print(escape(printable(f"{path}: manifest rebuilt from the shards that could be read")))
    console.print(escape(printable(f"{path}: repaired; {len(moved)} file(s) set aside, nothing deleted")))

"""`synth inspect`, `synth export` and `synth verify`: reading, exporting and checking a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from synth.cli.checks import check_out_file
from synth.cli.errors import fail, state
from synth.cli.options import path_argument, path_option
from synth.cli.output import console, print_check, print_inspection, print_json, print_repair


def inspect_dataset(
    path: Annotated[Path, path_argument("PATH", help="Dataset directory.")],
    sample: Annotated[int, typer.Option("--sample", min=0, help="Show N random kept records.")] = 3,
    rejects: Annotated[bool, typer.Option("--rejects", help="Show N random rejects with their reasons too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole summary as JSON, for scripts.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random samples.")] = 0,
) -> None:
    """Summarize a dataset: funnel by stage and reason, generator mix, lengths, scores, samples."""
    from synth.shards.summary import summarize

    summary = summarize(path, sample=sample, seed=seed)
    if as_json:
        print_json(summary)
    else:
        print_inspection(summary, show_rejects=rejects)


def export_dataset(
    path: Annotated[Path, path_argument("PATH", help="Dataset directory.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | alpaca | sharegpt | messages | dpo")] = "messages",
    out: Annotated[Path | None, path_option("--out", help="Output file (default: DIR/export/FORMAT.jsonl).")] = None,
) -> None:
    """Write the kept records as JSON lines for tools that want them: all columns, Alpaca, ShareGPT, chat
    messages, or preference pairs for DPO (prompt, chosen, rejected)."""
    from synth.shards.export import FORMATS, export
    from synth.shards.layout import MANIFEST, is_dataset

    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not is_dataset(path):
        fail(f"{path}: no {MANIFEST}; not a dataset folder")
    target = out or path / "export" / f"{fmt}.jsonl"
    check_out_file(target)
    state.writing_to = target
    rows = export(path, fmt, target)  # type: ignore[arg-type]
    if fmt == "dpo" and rows == 0:
        console.print(Text(f"{path} holds no preference pairs (made by `synth generate preferences`)"))
    console.print(Text(f"{rows} records written to {target}"))


def verify_dataset(
    path: Annotated[Path, path_argument("PATH", help="Dataset directory.")],
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Move damaged and unlisted shards to DIR/quarantine/ and rewrite the manifest with what "
            "remains (rebuilt from the shards when it is lost or unreadable). Nothing is deleted.",
        ),
    ] = False,
) -> None:
    """Check every shard the manifest lists (present, size, checksum, row count, readable) and list
    files it does not; exits 1 naming each problem. With --repair, set the problems aside."""
    from synth.shards import DatasetError
    from synth.shards.repair import check
    from synth.shards.repair import repair as repair_dataset

    try:
        if repair:
            report, moved = repair_dataset(path)
        else:
            report, moved = check(path), []
    except DatasetError as e:
        fail(str(e))
    if repair:
        print_repair(path, report, moved)
        return
    print_check(path, report)
    if not report.ok:
        raise typer.Exit(1)

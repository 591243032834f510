"""The `synth` command line: the app, its global options, and the table of its commands.

A command parses and checks its input, then calls `synth.flows` (or `synth.shards`); any error it
raises ends as one `error:` line and an exit code (`synth.cli.errors`). Nothing imports this
package; heavy modules (Prefect, vLLM) load inside the commands, so `synth --help` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated

import typer

from synth.cli import compare, curate, datasets, evaluate, generate, judge, model, recipes, select, train, view
from synth.cli.errors import ReportingGroup, state
from synth.cli.output import escape_log_records

app = typer.Typer(
    cls=ReportingGroup,
    help="Manufacture and curate instruction-tuning data with a local model.\n\n"
    "Exit codes: 0 done; 2 bad input (a path, a config, a value out of range); 1 a fault at run time "
    "(engine, Redis, disk, Prefect server). Errors are one line; -v or SYNTH_DEBUG=1 adds the traceback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "-v", "--verbose", help="Show libraries' own output, and on an error its traceback (or set SYNTH_DEBUG=1)."
        ),
    ] = False,
) -> None:
    """Options of every command."""
    escape_log_records()  # log lines quote record text and file names: never let them drive the terminal
    state.verbose = verbose
    if verbose:  # libraries' own output shows too (see synth.flows.api.prepare_process)
        os.environ["SYNTH_VERBOSE"] = "1"


# The commands after `generate`, in the order `synth --help` lists them.
COMMANDS: dict[str, Callable[..., None]] = {
    "run": recipes.run_recipe,
    "serve": recipes.serve_recipes,
    "curate": curate.curate,
    "inspect": datasets.inspect_dataset,
    "export": datasets.export_dataset,
    "prepare-model": model.prepare_model,
    "verify": datasets.verify_dataset,
    "train": train.train_model,
    "evaluate": evaluate.evaluate,
    "select": select.select,
    "compare": compare.compare,
    "judge-check": judge.judge_check,
    "view": view.view,
}

app.add_typer(generate.app, name="generate")
for name, command in COMMANDS.items():
    app.command(name)(command)


def main() -> None:
    app()

"""A `synth generate` command built from a generator's config, for a registry entry that has no
command of its own: adding a generator is then its modules and one registry entry.

Each field of the config that holds one value (text, a number, a flag, one of a few names) is an
option spelled like the field (`num_records` is `--num-records`, also `--num`), with the field's
description and bounds; a field without a default is a required option. An option left out takes the config's
default, or its profile's. Fields that are not single values (sampling settings, lists) keep their
defaults here; a recipe (`synth run`) sets them. The options every generator shares come from
`run_options`.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info
from typer.models import CommandInfo

from synth.cli.options import RunOptions, run_options
from synth.flows.registry import GENERATORS

if typing.TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from synth.flows.registry import Generator

Launch = Callable[[str, RunOptions, dict[str, Any]], None]
SHARED = ("language", "seed", "profile")  # fields `run_options` gives every generator
# Shorter flags, the same for every generator that has the field.
ALIASES = {"num_records": "--num"}
_VALUES = (str, int, float, bool)


def _value_type(annotation: Any) -> tuple[type, tuple[str, ...]] | None:
    """The type of an option for a field of this annotation, and its choices (a `Literal`); None
    for a field that holds more than one value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _value_type(rest[0]) if len(rest) == 1 else None
    if origin is Literal:
        return (str, tuple(args)) if all(isinstance(a, str) for a in args) else None
    return (annotation, ()) if annotation in _VALUES else None


def _help(name: str, field: FieldInfo, choices: tuple[str, ...], config: Any) -> str:
    parts = [field.description or name.replace("_", " ").capitalize() + "."]
    if choices:
        parts.append(f"One of: {', '.join(choices)}.")
    if not field.is_required():
        from synth.schemas.config import PROFILES

        changes = getattr(config, "profile_changes", None)
        by_profile = {p: c[name] for p in PROFILES if changes and name in (c := changes(p))}
        default = field.get_default(call_default_factory=True)
        shown = [f"default: {default!r}"] if default is not None else []
        shown += [f"{p}: {v!r}" for p, v in by_profile.items()]
        parts += [f"({'; '.join(shown)})"] if shown else []
    return " ".join(parts)


def field_options(config: Any) -> list[inspect.Parameter]:
    """The command's own options: one per single-value field of `config` (a pydantic model class)."""
    params = []
    for name, field in config.model_fields.items():
        if name in SHARED or (found := _value_type(field.annotation)) is None:
            continue
        kind, choices = found
        flag = "--" + name.replace("_", "-")
        declared = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        declared += [ALIASES[name]] if name in ALIASES else []
        bounds: dict[str, Any] = {}
        if kind in (int, float):
            for rule in field.metadata:
                if (low := getattr(rule, "ge", None)) is not None:
                    bounds["min"] = low
                if (high := getattr(rule, "le", None)) is not None:
                    bounds["max"] = high
        option = typer.Option(*declared, help=_help(name, field, choices, config), **bounds)
        required = field.is_required()
        annotation = Annotated[kind if required else kind | None, option]  # type: ignore[operator,valid-type]
        default = inspect.Parameter.empty if required else None
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default))
    return params


def command_name(generator: str) -> str:
    """The command a generator's name gets: `self_instruct` is `self-instruct`."""
    return generator.replace("_", "-")


def generator_command(generator: Generator, launch: Launch) -> Callable[..., None]:
    """A command for `generator` whose options are its config's fields and those `run_options`
    adds; it calls `launch(name, run, options)`, options left out as None."""
    config = generator.config
    own = field_options(config)

    def command(*, run: RunOptions, **options: Any) -> None:
        launch(generator.name, run, options)

    command.__name__ = f"generate_{generator.name}"
    resume = "Re-running the same command resumes the run" + (
        "; a larger --num extends it." if "num_records" in config.model_fields else "."
    )
    summary = (inspect.getdoc(config) or generator.name).split("\n\n")[0]
    command.__doc__ = f"{summary}\n\nOptions are the config's fields. {resume}"
    run_param = inspect.Parameter("run", inspect.Parameter.KEYWORD_ONLY, annotation=RunOptions)
    command.__signature__ = inspect.Signature([*own, run_param])  # type: ignore[attr-defined]
    seed = config.model_fields.get("seed")
    seed_help = seed.description if seed is not None and seed.description else "Run seed."
    return run_options(seed_help=seed_help, profile="profile" in config.model_fields)(command)


def generator_group(launch: Launch, written: dict[str, str]) -> type[TyperGroup]:
    """The class of `synth generate`'s group: its hand-written commands (`written`: generator name
    to command name), and for every other registry entry a command built from its config when it is
    first asked for, so that starting `synth` loads no config. Commands are listed in registry order."""

    class GeneratorGroup(TyperGroup):
        def list_commands(self, ctx: Any) -> list[str]:
            names = [written.get(name, command_name(name)) for name in GENERATORS]
            return [*names, *(n for n in super().list_commands(ctx) if n not in names)]

        def get_command(self, ctx: Any, name: str) -> Any:
            if (found := super().get_command(ctx, name)) is not None:
                return found
            built = [g for g in GENERATORS.values() if g.name not in written and command_name(g.name) == name]
            if not built:
                return None
            info = CommandInfo(name=name, callback=generator_command(built[0], launch))
            command = get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=self.rich_markup_mode)
            self.add_command(command, name)
            return command

    return GeneratorGroup

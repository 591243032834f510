"""Every `synth generate` command, built from its generator's config: adding a generator is its
modules and one registry entry.

Each field of the config that holds one value (text, a number, a flag, one of a few names) is an
option spelled like the field (`num_records` is `--num-records`, also `--num`; `source` is also
`--from`), with the field's description and bounds; a field without a default is a required option.
An option left out takes the config's default, or its profile's. Fields that are not single values
(sampling settings, lists) keep their defaults here; a recipe (`synth run`) sets them. The options
every generator shares come from `run_options`. A generator may add options of its own and finish
the run itself (`Custom`): engines to load, a summary of its own to print.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info
from typer.models import CommandInfo

from synth.cli.errors import fail
from synth.cli.options import RunOptions, run_options
from synth.registry import GENERATORS

if typing.TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from synth.registry import Generator

Launch = Callable[[str, RunOptions, dict[str, Any]], None]
SHARED = ("language", "seed", "profile")  # fields `run_options` gives every generator
# Shorter flags, the same for every generator that has the field.
ALIASES = {"num_records": "--num", "source": "--from", "samples": "-k", "max_steps": "--train-steps"}
_VALUES = (str, int, float, bool)


def _without_none(annotation: Any) -> Any:
    """`X` for `X | None`; any other annotation as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _value_type(annotation: Any) -> tuple[type, tuple[str, ...]] | None:
    """The type of an option for a field of this annotation, and its choices (a `Literal`); None
    for a field that holds more than one value."""
    annotation = _without_none(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return None
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


def field_options(config: Any, lead: str = "") -> list[inspect.Parameter]:
    """The command's own options: one per single-value field of `config` (a pydantic model class),
    each help text after `lead`."""
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
        option = typer.Option(*declared, help=lead + _help(name, field, choices, config), **bounds)
        required = field.is_required()
        annotation = Annotated[kind if required else kind | None, option]  # type: ignore[operator,valid-type]
        default = inspect.Parameter.empty if required else None
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default))
    return params


def build_config(config: Any, fields: dict[str, Any]) -> Any:
    """`config` (a pydantic model class) from the options given (None: left out); a value it
    refuses fails naming the option (`--length-cut: Input should be ...`), and so does an empty
    path among the files it reads."""
    from pydantic import ValidationError

    try:
        built = config(**{name: value for name, value in fields.items() if value is not None})
    except ValidationError as e:
        problems = [f"--{'.'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" for err in e.errors()]
        fail("; ".join(problems))
    # Path("") is the working directory: `--seeds ''` would read it, never the file meant.
    for name, value in getattr(built, "input_paths", dict)().items():
        if value == "":
            fail(f"--{name.replace('_', '-')}: an empty path names no file or folder (for this folder, give '.')")
    return built


def command_name(generator: str) -> str:
    """The command a generator's name gets: `self_instruct` is `self-instruct`."""
    return generator.replace("_", "-")


@dataclass(frozen=True)
class Custom:
    """A generator's own take on its command: the command's `name`, and a function `finish(run,
    options, **own)` that runs it. Its parameters after `run` and `options` are options of its own
    (declared as a command's are); one named like a config field replaces that field's option.
    `options` holds the config's fields as given (None: left out). Each of `nested`, a field holding
    a config of its own, has that config's single-value fields as options too, and comes in
    `options` as the dict of them. Its docstring is the command's help."""

    name: str
    finish: Callable[..., None]
    nested: tuple[str, ...] = ()


def generator_command(generator: Generator, launch: Launch, custom: Custom | None = None) -> Callable[..., None]:
    """A command for `generator` whose options are its config's fields (and `custom`'s own), and
    those `run_options` adds. It calls `custom.finish(run, options, **own)`, or without a custom
    `launch(name, run, options)`; options left out are None."""
    config = generator.config
    own = [] if custom is None else list(inspect.signature(custom.finish, eval_str=True).parameters.values())[2:]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    names = {p.name for p in own}
    fields = [p for p in field_options(config) if p.name not in names]
    inner = {
        n: field_options(_without_none(config.model_fields[n].annotation), f"With --{n.replace('_', '-')}: ")
        for n in (custom.nested if custom else ())
    }

    def command(*, run: RunOptions, **given: Any) -> None:
        mine = {name: given.pop(name) for name in names}
        for name, params in inner.items():
            given[name] = {p.name: given.pop(p.name) for p in params}
        if custom is None:
            launch(generator.name, run, given)
        else:
            custom.finish(run, given, **mine)

    command.__name__ = f"generate_{generator.name}"
    resume = "Re-running the same command resumes the run" + (
        "; a larger --num extends it." if "num_records" in config.model_fields else "."
    )
    summary = (inspect.getdoc(config) or generator.name).split("\n\n")[0]
    own_doc = inspect.getdoc(custom.finish) if custom is not None else None
    command.__doc__ = own_doc or f"{summary}\n\nOptions are the config's fields. {resume}"
    run_param = inspect.Parameter("run", inspect.Parameter.KEYWORD_ONLY, annotation=RunOptions)
    nested = [p for params in inner.values() for p in params]
    command.__signature__ = inspect.Signature([*fields, *own, *nested, run_param])  # type: ignore[attr-defined]
    seed = config.model_fields.get("seed")
    seed_help = seed.description if seed is not None and seed.description else "Run seed."
    return run_options(seed_help=seed_help, profile="profile" in config.model_fields)(command)


def generator_group(launch: Launch, custom: dict[str, Custom]) -> type[TyperGroup]:
    """The class of `synth generate`'s group: a command for every registry entry, built from its
    config when first asked for (so that starting `synth` loads no config), in registry order;
    `custom` gives a generator its own name and finish (see `Custom`)."""

    def name_of(generator: str) -> str:
        return custom[generator].name if generator in custom else command_name(generator)

    class GeneratorGroup(TyperGroup):
        def list_commands(self, ctx: Any) -> list[str]:
            names = [name_of(g) for g in GENERATORS]
            return [*names, *(n for n in super().list_commands(ctx) if n not in names)]

        def get_command(self, ctx: Any, name: str) -> Any:
            if (found := super().get_command(ctx, name)) is not None:
                return found
            built = [g for g in GENERATORS.values() if name_of(g.name) == name]
            if not built:
                return None
            callback = generator_command(built[0], launch, custom.get(built[0].name))
            info = CommandInfo(name=name, callback=callback)
            command = get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=self.rich_markup_mode)
            self.add_command(command, name)
            return command

    return GeneratorGroup

"""Command-line flags made from the models' own definitions.

One definition per parameter: the flags of ``ccsr upscale`` and of the client
commands (``ccsr run|submit``) come from each model's ``Params`` (name, type,
choices, help, default), and the model-specific settings flags of ``ccsr
serve`` and ``ccsr upscale`` (``--weights``) from each model's settings
section. A flag's default is None, "not given": the chosen model applies its
own default, so none is written twice.

Several models contribute to one command: a field that several share is one
flag; a field whose flag the command already has (``--model`` of ``ccsr
upscale`` and Real-ESRGAN's ``model`` field) becomes ``--<model name>-<field>``.
The command then checks that every flag given belongs to the chosen model
(:func:`given_fields`), so a flag of another model is a clear usage error.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from typing import Any, Callable, Iterable, Optional

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

#: Exit code of a mistake in the command line (the same as click's own usage errors).
USAGE_ERROR = 2


@dataclasses.dataclass
class FieldFlag:
    """One generated flag: the keyword the command receives, the flag, the
    model field behind it and the models (by name) that have that field."""

    param: str
    flag: str
    field: str
    owners: dict[str, FieldInfo]
    #: Extra typer.Option arguments (exists=True ...), for settings flags.
    extra: dict = dataclasses.field(default_factory=dict)
    #: Text added to the help (the environment variable of a setting).
    note: str = ""


class FlagError(Exception):
    """Flags that do not belong to the chosen model; ``lines`` are the messages."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


def _dash(name: str) -> str:
    return "--" + name.replace("_", "-")


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower())


def field_flags(models: dict[str, type[BaseModel]], reserved: Iterable[str] = ()) -> list[FieldFlag]:
    """A flag per field of the models (``{model name: Params}``), shared fields
    merged; a field named like one of ``reserved`` (the command's own keywords)
    gets one prefixed flag per model."""
    taken = set(reserved)
    by_field: dict[str, dict[str, FieldInfo]] = {}
    for owner, model in models.items():
        for name, info in model.model_fields.items():
            by_field.setdefault(name, {})[owner] = info
    flags = []
    for name, owners in by_field.items():
        if name in taken:
            for owner, info in owners.items():
                param = f"{_ident(owner)}_{name}"
                flags.append(FieldFlag(param, _dash(param), name, {owner: info}))
        else:
            flags.append(FieldFlag(name, _dash(name), name, owners))
    return flags


def setting_flags(sections: dict[str, Any], by_field: bool = False) -> list[FieldFlag]:
    """The flags of the models' settings sections (``{model name: ModelSettings
    class}``): fields marked ``cli``, named after their flat name (``--weights``,
    ``--v2-weights``: one flag per setting, as ``ccsr serve`` needs). With
    ``by_field``, a field several models have is one flag named after the field
    (``ccsr upscale --model ccsr-v2 --weights DIR``: one model runs, so one
    ``--weights`` serves them all); the others keep their flat names."""
    flags: list[FieldFlag] = []
    shared: dict[str, FieldFlag] = {}
    counts: dict[str, int] = {}
    for cls in sections.values():
        for name in cls.cli_fields():
            counts[name] = counts.get(name, 0) + 1
    for owner, cls in sections.items():
        for name, extra in cls.cli_fields().items():
            flat = cls.flat_name(name)
            if not by_field or counts[name] == 1:
                flags.append(FieldFlag(flat, _dash(flat), name, {owner: cls.model_fields[name]}, extra,
                                       note=f"env CCSR_{flat.upper()}"))
                continue
            flag = shared.get(name)
            if flag is None:
                flag = shared[name] = FieldFlag(name, _dash(name), name, {}, dict(extra), note="")
                flags.append(flag)
            elif flag.extra != extra:
                flag.extra = {}  # the models disagree (file or folder): each model's own check decides
            flag.owners[owner] = cls.model_fields[name]
            envs = ", ".join(f"CCSR_{sections[o].flat_name(name).upper()}" for o in flag.owners)
            flag.note = f"env {envs}"
    return flags


def _base(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation


def _merged_type(infos: list[FieldInfo]) -> Any:
    """One type for a flag several models share: theirs if they agree, the union
    of their choices, float for numbers, else str (each model's own type checks it)."""
    bases = [_base(i.annotation) for i in infos]
    if all(b == bases[0] for b in bases):
        return bases[0]
    if all(typing.get_origin(b) is typing.Literal for b in bases):
        return typing.Literal[tuple(dict.fromkeys(v for b in bases for v in typing.get_args(b)))]  # type: ignore[misc]
    if all(b in (int, float) for b in bases):
        return float
    return str


def _help(flag: FieldFlag, all_owners: int) -> str:
    first = next(iter(flag.owners.values()))
    text = (first.description or "").rstrip(".")
    defaults = {o: i.default for o, i in flag.owners.items() if i.default is not None and not i.is_required()}
    values = set(map(repr, defaults.values()))
    if defaults and len(values) == 1 and len(defaults) == len(flag.owners):
        text += f". Default: {next(iter(defaults.values()))}"
    elif defaults:
        text += ". Default: " + ", ".join(f"{v} ({o})" for o, v in defaults.items())
    if len(flag.owners) < all_owners:
        text += ". Only for " + ", ".join(flag.owners)
    if flag.note:
        text += f" ({flag.note})"
    return text + "."


def parameters(flags: list[FieldFlag], panel: Optional[str] = None) -> list[inspect.Parameter]:
    """Keyword-only parameters typer reads, one per flag, each defaulting to None."""
    owners = len({o for f in flags for o in f.owners})
    params = []
    for f in flags:
        base = _merged_type(list(f.owners.values()))
        help_text = _help(f, owners)
        common = dict(help=help_text, show_default=False, rich_help_panel=panel, **f.extra)
        if typing.get_origin(base) is typing.Literal and all(isinstance(v, str) for v in typing.get_args(base)):
            choices = enum.Enum(f"{f.param}_choice", {v: v for v in typing.get_args(base)}, type=str)  # type: ignore[misc]
            ann, opt = Optional[choices], typer.Option(None, f.flag, case_sensitive=False, **common)
        elif base is bool:
            ann, opt = Optional[bool], typer.Option(None, f"{f.flag}/--no-{f.flag[2:]}", **common)
        elif typing.get_origin(base) is typing.Literal:
            ann, opt = Optional[str], typer.Option(None, f.flag, **common)
        else:
            ann, opt = Optional[base], typer.Option(None, f.flag, **common)
        params.append(inspect.Parameter(f.param, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
    return params


def given_fields(kw: dict, flags: list[FieldFlag], owner: str, choose: str) -> dict[str, Any]:
    """The fields of model ``owner`` the user gave (flags left at None are not
    given). A flag of another model raises :class:`FlagError` naming the flag,
    the model, and ``choose`` (how to pick the model that has it)."""
    fields, wrong = {}, []
    for f in flags:
        value = kw.get(f.param)
        if value is None:
            continue
        if owner not in f.owners:
            wrong.append(f"{f.flag}: not a field of {owner} (it belongs to {', '.join(f.owners)}: {choose})")
            continue
        fields[f.field] = value.value if isinstance(value, enum.Enum) else value
    if wrong:
        raise FlagError(wrong)
    return fields


def flag_of(flags: list[FieldFlag], owner: str, field: str) -> Optional[str]:
    """The flag of one model's field, or None."""
    return next((f.flag for f in flags if f.field == field and owner in f.owners), None)


def with_signature(func: Callable, params: list[inspect.Parameter]) -> Callable:
    """Give ``func(**kw)`` a signature typer can read, without writing each flag by hand."""
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    func.__annotations__ = {}
    return func


def command(impl: Callable[..., None], name: str, doc: Optional[str] = None) -> Callable[..., None]:
    """A fresh function per command (typer reads the signature and docstring from it)."""

    def run(**kw: Any) -> None:
        impl(**kw)

    run.__name__ = name
    run.__doc__ = doc or impl.__doc__
    return run


def validation_lines(exc: Any, flag: Callable[[str], str]) -> list[str]:
    """``error: --flag: message`` lines of a pydantic ValidationError."""
    return [f"{flag(str(e['loc'][0])) if e['loc'] else 'input'}: {e['msg']}" for e in exc.errors()]

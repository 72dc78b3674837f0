"""One settings dataclass per stage, one source of help text.

Each stage declares its knobs once, as a dataclass whose fields carry
``metadata={"help": ...}`` (TRL's pattern). :func:`click_options` turns it into
the command's options (so ``--help`` and the docs cannot drift apart),
:func:`settings_from_options` builds the object back, and
:func:`write_settings` records the effective settings next to a stage's outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

import click

S = TypeVar("S")


def knob(default: Any, help: str, **kwargs: Any) -> Any:
    """A settings field with its help text."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: default, metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def _option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_fields(settings_cls: type) -> list[dataclasses.Field]:
    """The fields of ``settings_cls`` in ``--help`` (and settings-file) order.

    A class whose knobs partly come from shared bases (:mod:`maskdpo.stage`) names its order in
    ``option_order``, every field once, so its ``--help`` reads as one list however the knobs are
    declared; otherwise the order is the dataclass's.
    """
    fields = dataclasses.fields(settings_cls)
    order = settings_cls.__dict__.get("option_order")
    if order is None:
        return list(fields)
    by_name = {f.name: f for f in fields}
    if sorted(order) != sorted(by_name):
        missing, unknown = sorted(set(by_name) - set(order)), sorted(set(order) - set(by_name))
        raise TypeError(f"{settings_cls.__name__}.option_order must name every field once "
                        f"(missing: {missing}, unknown: {unknown})")
    return [by_name[name] for name in order]


def click_options(settings_cls: type, exclude: tuple[str, ...] = ()) -> Callable:
    """Decorator adding one click option per field of ``settings_cls``.

    A class may word an inherited knob's help for its own stage with a class attribute
    ``option_help = {"field": "text"}`` (the knob itself, its type and default, stays declared once),
    and leave out inherited knobs that mean nothing to it with ``cli_exclude = ("field", ...)``.
    """
    hints = typing.get_type_hints(settings_cls)
    reworded = getattr(settings_cls, "option_help", {})
    exclude = tuple(exclude) + tuple(getattr(settings_cls, "cli_exclude", ()))
    decorators = []
    for f in option_fields(settings_cls):
        if f.name in exclude:
            continue
        tp = hints[f.name]
        help_text = reworded.get(f.name, f.metadata.get("help", ""))
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = dataclasses.MISSING  # a required option
        required = default is dataclasses.MISSING
        origin = typing.get_origin(tp)
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if origin is typing.Union and len(args) == 1:  # Optional[X]
            tp, origin, args = args[0], typing.get_origin(args[0]), list(typing.get_args(args[0]))
        kwargs: dict[str, Any] = {"help": help_text, "show_default": not required and default is not None}
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if tp is bool:
            decl = f"{_option_name(f.name)}/--no-{f.name.replace('_', '-')}"
            decorators.append(click.option(decl, f.name, **kwargs))
            continue
        if origin is Literal:
            kwargs["type"] = click.Choice([str(a) for a in args])
        elif tp in (int, float, str):
            kwargs["type"] = tp
        elif tp is Path:
            kwargs["type"] = click.Path(path_type=Path)
        decorators.append(click.option(_option_name(f.name), f.name, **kwargs))

    def apply(fn: Callable) -> Callable:
        for dec in reversed(decorators):
            fn = dec(fn)
        return fn

    return apply


def settings_from_options(settings_cls: type[S], options: dict[str, Any]) -> S:
    names = {f.name for f in dataclasses.fields(settings_cls)}  # type: ignore[arg-type]
    return settings_cls(**{k: v for k, v in options.items() if k in names})


def settings_dict(settings: Any) -> dict:
    """The settings as JSON values; knobs the class does not offer (``cli_exclude``) are not its settings."""
    left_out = set(getattr(type(settings), "cli_exclude", ()))
    values = dataclasses.asdict(settings)
    return {f.name: (str(values[f.name]) if isinstance(values[f.name], os.PathLike) else values[f.name])
            for f in option_fields(type(settings)) if f.name not in left_out}


def write_settings(path: str | os.PathLike, settings: Any, **extra: Any) -> None:
    """Write the effective settings of a run as JSON (next to its outputs), atomically
    (:func:`maskdpo.jsonl.atomic_file`): a kill leaves the old file or the new one, never a truncated one
    (a resume guard reads it)."""
    from .jsonl import atomic_file

    payload = {**settings_dict(settings), **extra}
    with atomic_file(path) as handle:
        handle.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n")


def read_settings(path: str | os.PathLike) -> dict:
    """A settings file written by :func:`write_settings`; an unreadable or corrupt one is an error naming it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        payload = json.loads(text)
    except OSError as exc:
        raise OSError(f"{path}: cannot read the settings file ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: the settings file is corrupt ({exc}); it records the settings the output next "
                         "to it was made with: restore it, or start a new output") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: the settings file is corrupt (expected a JSON object)")
    return payload

"""argparse flags generated from config dataclasses (one flag per field, ``--snake-case``)."""
from __future__ import annotations

import argparse
import inspect
import json
import re
import typing
from dataclasses import MISSING, fields
from typing import Any


def _optional(text: str, cast: Any) -> Any:
    return None if text.lower() in ("none", "null", "") else cast(text)


def field_comments(cls: type) -> dict[str, str]:
    """Trailing ``# comment`` of each field line in the dataclass source (the flag's help text)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for match in re.finditer(r"^\s+(\w+): [^#\n]*#\s*(.+)$", source, flags=re.M):
        out.setdefault(match.group(1), match.group(2).strip())
    return out


def add_dataclass_arguments(parser: argparse.ArgumentParser | Any, cls: type, exclude: tuple[str, ...] = (),
                            help_texts: dict[str, str] | None = None) -> None:
    """Add ``--field-name`` for every field of dataclass ``cls`` (defaults shown in --help)."""
    hints = typing.get_type_hints(cls)
    help_texts = {**field_comments(cls), **(help_texts or {})}
    for f in fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        hint = hints[f.name]
        text = help_texts.get(f.name, "") + f" (default: {default})"
        args = typing.get_args(hint)
        nullable = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if args and nullable else hint
        origin = typing.get_origin(base)
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif origin is list:
            inner = typing.get_args(base)[0]
            if typing.get_origin(inner) is list:
                parser.add_argument(flag, type=json.loads, default=default, help=text + " [JSON]")
            elif nullable:
                parser.add_argument(flag, type=lambda s, t=inner: _optional(s, t), nargs="*", default=default,
                                    help=text + " ('none' = default)")
            else:
                parser.add_argument(flag, type=inner, nargs="*", default=default, help=text)
        elif nullable:
            parser.add_argument(flag, type=lambda s, t=base: _optional(s, t), default=default,
                                help=text + " ('none' for None)")
        else:
            parser.add_argument(flag, type=base, default=default, help=text)


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Instantiate ``cls`` from parsed flags (fields missing from ``args`` keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    for name, value in list(values.items()):
        if isinstance(value, list) and value and all(v is None for v in value):
            values[name] = None
    values.update(overrides)
    return cls(**values)

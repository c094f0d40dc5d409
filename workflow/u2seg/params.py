"""Stage parameters as dataclasses: argparse flags generated from them, the resolved values saved.

Each stage's settings and their defaults live once, in a torch-free dataclass whose defaults are the
paper's values (like detectron2's defaults); :func:`add_dataclass_arguments` turns its fields into
``--snake-case`` flags. The package never reads the repository's ``config.yaml``: the workflow passes
every configured key as a flag, so an installed wheel has the same defaults as a checkout.
"""
from __future__ import annotations

import argparse
import inspect
import os
import json
import re
import shlex
import typing
from dataclasses import MISSING, fields
from typing import Any

# Stuff clusters of the COCO-Stuff-27 setting (U2Seg / STEGO): the default stuff class count everywhere.
STUFF_CLUSTERS = 27


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


def field_default(f: Any) -> Any:
    """Default value of dataclass field ``f`` (a fresh copy for ``default_factory`` fields)."""
    return f.default if f.default is not MISSING else f.default_factory()


def add_dataclass_arguments(parser: argparse.ArgumentParser | Any, cls: type, exclude: tuple[str, ...] = (),
                            help_texts: dict[str, str] | None = None) -> None:
    """Add ``--field-name`` for every field of dataclass ``cls`` (the dataclass default, shown in --help)."""
    hints = typing.get_type_hints(cls)
    help_texts = {**field_comments(cls), **(help_texts or {})}
    for f in fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = field_default(f)
        text = help_texts.get(f.name, "") + f" (default: {default})"
        hint = hints[f.name]
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


def to_flags(values: dict[str, Any]) -> str:
    """``{key: value}`` -> ``--key value ...`` for a shell command, the inverse of the generated flags.

    Values are shell-quoted; lists give several values, booleans ``--key`` / ``--no-key``, None ``none``.
    The workflow turns a config section into a stage's flags with this (rules/common.smk ``config_flags``).
    """
    parts = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is None:
            parts.append(f"{flag} none")
        elif isinstance(value, (list, tuple)):
            parts.append(" ".join([flag] + [shlex.quote(str(v)) for v in value]))
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def _portable(value: Any, base: str) -> Any:
    """Absolute paths relative to ``base`` (the same record for the same layout anywhere); JSON types."""
    if isinstance(value, (list, tuple)):
        return [_portable(v, base) for v in value]
    if isinstance(value, os.PathLike) or isinstance(value, str) and os.path.isabs(value):
        text = os.fspath(value)
        return os.path.relpath(os.path.abspath(text), base) if os.path.isabs(text) else text
    return value if value is None or isinstance(value, (bool, int, float, str, dict)) else str(value)


def resolved_config(stage: str, args: argparse.Namespace, base: str | os.PathLike) -> dict[str, Any]:
    """The record of one stage run: stage, u2seg version and every parsed flag (absolute paths made
    relative to ``base``, the folder of the record)."""
    from u2seg.version import __version__

    base = os.path.abspath(os.fspath(base))
    return {"stage": stage, "u2seg_version": __version__,
            "args": {k: _portable(v, base) for k, v in sorted(vars(args).items()) if not callable(v)}}


def write_resolved_config(path: str | os.PathLike, stage: str, args: argparse.Namespace) -> None:
    """Write :func:`resolved_config` to ``path`` atomically (next to a stage's outputs)."""
    from u2seg.atomic import write_json

    write_json(path, resolved_config(stage, args, os.path.dirname(os.path.abspath(os.fspath(path)))), indent=1)


def record_beside(output: str | os.PathLike | None) -> str | None:
    """Where a stage whose main output is ``output`` keeps its resolved config: ``<stem>.config.json``
    beside it (``manifest.json`` -> ``manifest.config.json``); None without an output."""
    if not output:
        return None
    path = os.fspath(output)
    folder, name = os.path.split(path.rstrip(os.sep))
    return os.path.join(folder, name.split(".")[0] + ".config.json")


def record_inside(out_dir: str | os.PathLike | None) -> str | None:
    """``<out_dir>/config.json``: the resolved config of a stage that writes a folder of outputs."""
    return os.path.join(os.fspath(out_dir), "config.json") if out_dir else None

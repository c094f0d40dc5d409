"""argparse flags generated from config dataclasses (one flag per field, ``--snake-case``).

Defaults of the flags that the workflow sets come from the repository's ``config.yaml`` (one source
of truth: :func:`config_defaults`); the other flags keep the dataclass defaults (U2Seg's values).
"""
from __future__ import annotations

import argparse
import inspect
import json
import re
import typing
from dataclasses import MISSING, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

# The repository's config.yaml (workflow/u2seg/detector/cliutil.py -> repository root).
CONFIG_YAML = Path(__file__).resolve().parents[3] / "config.yaml"


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


@lru_cache(maxsize=4)
def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def config_defaults(section: str, path: Path = CONFIG_YAML) -> dict[str, Any]:
    """Values of ``config.yaml`` section ``section`` that are CLI defaults ({} without config.yaml).

    ``model`` also gets ``num_classes`` = clustering.k and ``num_stuff`` = stuff.k, as the workflow
    passes them; nested sections (``train.self_training``) are left out.
    """
    if not path.is_file():
        return {}
    config = _load_yaml(path)
    values = {k: v for k, v in (config.get(section) or {}).items() if not isinstance(v, dict)}
    if section == "model":
        values["num_classes"] = config["clustering"]["k"]
        values["num_stuff"] = config["stuff"]["k"]
    return values


def add_dataclass_arguments(parser: argparse.ArgumentParser | Any, cls: type, exclude: tuple[str, ...] = (),
                            help_texts: dict[str, str] | None = None,
                            defaults: dict[str, Any] | None = None, source: str = "config.yaml") -> None:
    """Add ``--field-name`` for every field of dataclass ``cls`` (defaults shown in --help).

    ``defaults`` (e.g. :func:`config_defaults`) replace the dataclass defaults of the fields they name;
    --help marks those as coming from ``source``.
    """
    hints = typing.get_type_hints(cls)
    help_texts = {**field_comments(cls), **(help_texts or {})}
    defaults = defaults or {}
    for f in fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name in defaults:
            default = defaults[f.name]
            text = help_texts.get(f.name, "") + f" (default: {default}, from {source})"
        else:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
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

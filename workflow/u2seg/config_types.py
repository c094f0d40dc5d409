"""Command-line config values -> the config schema's types (before validation).

Snakemake parses ``--config key=value`` with ``int``, ``float``, booleans, then YAML's *BaseLoader*:
a nested value such as ``--config 'clustering={"k": 300}'`` arrives as ``{"k": "300"}`` (every
scalar a string), which the schema then rejects ("'300' is not of type 'integer'"). :func:`coerce`
walks the config beside the schema and converts each string to the type the schema asks for
(integer, number, boolean, null, also inside arrays), only where a string is not allowed there
(``null`` / ``~`` become None wherever null is allowed, as YAML reads them).
Values that do not convert are left alone, so validation still names the bad key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

TRUE = {"true", "yes", "on"}
FALSE = {"false", "no", "off"}
NULL = {"null", "none", "~", ""}


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` (``#/$defs/name``) merged in (the node's own keys win)."""
    ref = node.get("$ref")
    if not ref or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**_resolve(target, root), **{k: v for k, v in node.items() if k != "$ref"}}


def _types(node: dict[str, Any]) -> list[str]:
    kind = node.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _convert(text: str, kind: str) -> tuple[bool, Any]:
    """(converted?, value) of string ``text`` as JSON-schema type ``kind``."""
    low = text.strip().lower()
    if kind == "integer":
        try:
            return True, int(text.strip())
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return False, None
            return (True, int(number)) if number.is_integer() else (False, None)
    if kind == "number":
        try:
            return True, int(text.strip())
        except ValueError:
            try:
                return True, float(text)
            except ValueError:
                return False, None
    if kind == "boolean":
        if low in TRUE:
            return True, True
        if low in FALSE:
            return True, False
        return False, None
    if kind == "null" and low in NULL:
        return True, None
    return False, None


def coerce_value(value: Any, node: dict[str, Any], root: dict[str, Any]) -> Any:
    """``value`` converted to the type(s) of schema ``node`` where it is a string that is not allowed."""
    node = _resolve(node, root)
    kinds = _types(node)
    if isinstance(value, dict):
        props = node.get("properties", {})
        return {k: coerce_value(v, props[k], root) if k in props else v for k, v in value.items()}
    if isinstance(value, list):
        items = node.get("items")
        return [coerce_value(v, items, root) for v in value] if isinstance(items, dict) else value
    if isinstance(value, str) and "null" in kinds and value.strip() in ("null", "~"):
        return None  # YAML's null, also where a string is allowed (`model={backbone_weights: null}`)
    if isinstance(value, str) and kinds and "string" not in kinds:
        for kind in kinds:
            ok, converted = _convert(value, kind)
            if ok:
                return converted
    return value


def coerce(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Convert, in place, the string values of ``config`` that the ``schema`` wants as other types."""
    converted = coerce_value(config, schema, schema)
    config.clear()
    config.update(converted)
    return config


def coerce_with_schema_file(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """:func:`coerce` with the schema read from a YAML file."""
    import yaml

    with open(schema_path) as fh:
        return coerce(config, yaml.safe_load(fh))

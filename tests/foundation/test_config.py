"""Config: the schema validates config.yaml, its defaults agree with it, bad values fail before any job."""
from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from tests.conftest import REPO, run_snakemake

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def _defaults(schema: dict) -> dict:
    out = {}
    for key, prop in schema.get("properties", {}).items():
        if "$ref" in prop:
            prop = {**SCHEMA["$defs"][prop["$ref"].split("/")[-1]], **prop}
        if prop.get("type") == "object" and "properties" in prop:
            out[key] = _defaults(prop)
        elif "default" in prop:
            out[key] = prop["default"]
    return out


def _compare(defaults: dict, config: dict, path: str = "") -> list[str]:
    diffs = []
    for key, value in defaults.items():
        if key not in config:
            diffs.append(f"{path}{key} missing from config.yaml")
        elif isinstance(value, dict):
            diffs += _compare(value, config[key] or {}, f"{path}{key}.")
        elif value != config[key]:
            diffs.append(f"{path}{key}: schema default {value!r} != config.yaml {config[key]!r}")
    return diffs


def test_config_yaml_is_valid():
    jsonschema.validate(CONFIG, SCHEMA)


def test_schema_defaults_equal_config_yaml():
    # One source of truth: a key overridden partially on the command line falls back to the same value.
    assert _compare(_defaults(SCHEMA), CONFIG) == []


@pytest.mark.parametrize("path,value", [
    (("backbone",), "nope"),
    (("features", "shard_size"), -1),
    (("maskcut", "solver"), "magic"),
    (("bogus_key",), 1),
])
def test_schema_rejects_bad_values(path, value):
    cfg = copy.deepcopy(CONFIG)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, SCHEMA)


@pytest.mark.parametrize("override,needle", [
    ({"backbone": "nope"}, "backbone"),
    ({"features": {"shard_size": -1}}, "shard_size"),
    ({"unknown_key": 3}, "unknown_key"),
])
def test_snakemake_fails_before_any_job_naming_the_key(tmp_path, override, needle):
    proc = run_snakemake(tmp_path, ["extract_features", "-n"], override, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error validating config" in out and needle in out
    assert not (tmp_path / "results").exists()

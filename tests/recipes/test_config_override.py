"""Every config key settable from the command line with its schema type, nested ones included."""
from __future__ import annotations

import jsonschema
import pytest
import yaml

from tests.conftest import REPO
from tests.snakemake_runner import run_snakemake
from tests.detector.synth import stage_ingested
from u2seg.config_types import coerce

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def _base_load(text: str):
    """What Snakemake's --config parser makes of a nested value (YAML BaseLoader: strings only)."""
    return yaml.load(text, Loader=yaml.loader.BaseLoader)


def test_nested_strings_become_schema_types():
    cfg = dict(CONFIG)
    cfg["clustering"] = {**CONFIG["clustering"], **_base_load('{"k": 300}')}
    cfg["train"] = {**CONFIG["train"], **_base_load("{min_sizes: [480, 640], amp: false, base_lr: 2e-2}")}
    cfg["model"] = {**CONFIG["model"], **_base_load("{backbone_weights: null, cascade_ious: [0.5, 0.6, 0.7]}")}
    cfg["train"]["self_training"] = {**CONFIG["train"]["self_training"], **_base_load("{steps: [10, 20]}")}
    with pytest.raises(jsonschema.ValidationError, match="is not of type"):
        jsonschema.validate(cfg, SCHEMA)
    coerce(cfg, SCHEMA)
    jsonschema.validate(cfg, SCHEMA)
    assert cfg["clustering"]["k"] == 300 and type(cfg["clustering"]["k"]) is int
    assert cfg["train"]["min_sizes"] == [480, 640] and cfg["train"]["amp"] is False
    assert cfg["train"]["base_lr"] == pytest.approx(0.02)
    assert cfg["model"]["backbone_weights"] is None and cfg["model"]["cascade_ious"] == [0.5, 0.6, 0.7]
    assert cfg["train"]["self_training"]["steps"] == [10, 20]


def test_strings_stay_where_the_schema_allows_them_and_bad_values_still_fail():
    cfg = {"weights": "123", "images_dir": "null", "clustering": {"k": "many"}}
    coerce(cfg, SCHEMA)
    assert cfg["weights"] == "123"  # a string is allowed: kept as given
    assert cfg["images_dir"] is None  # YAML's null
    assert cfg["clustering"]["k"] == "many"  # not convertible: the validation names it
    full = {**CONFIG, "clustering": {**CONFIG["clustering"], "k": "many"}}
    with pytest.raises(jsonschema.ValidationError, match="'many' is not of type 'integer'"):
        jsonschema.validate(full, SCHEMA)
    cfg = {"clustering": {"k": "2.5"}}
    coerce(cfg, SCHEMA)
    assert cfg["clustering"]["k"] == "2.5"  # no silent truncation


def test_snakemake_config_nested_values_reach_the_commands(tmp_path):
    """`snakemake --config 'clustering={"k": 300}' 'train={...}'`: validated and passed on as numbers."""
    stage_ingested(tmp_path)
    proc = run_snakemake(tmp_path, ["-n", "-p", "train"], timeout=600, extra=[
        "--config", 'clustering={"k": 300}', "train={min_sizes: [480, 640], max_size: 1333, amp: false}"])
    cmds = [line for line in proc.stdout.splitlines() if " -m u2seg train " in line]
    assert len(cmds) == 1
    assert "--num-classes 300" in cmds[0] and "--min-sizes 480 640" in cmds[0] and "--no-amp" in cmds[0]
    assert "--max-size 1333" in cmds[0]
    clusters = [line for line in proc.stdout.splitlines() if " -m u2seg cluster-instances " in line]
    assert clusters and "300" in clusters[0]

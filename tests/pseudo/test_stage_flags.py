"""Pseudo-label and MaskCut stages: shared flags defined once (u2seg.cliargs) and the resolved-config record."""
from __future__ import annotations

import argparse
import ast
import importlib
import json
from collections import Counter
from pathlib import Path

from u2seg.cli import STAGES, main
from tests.pseudo.conftest import SHARD_SIZE, Synthetic

PACKAGE = Path(__file__).resolve().parents[2] / "workflow" / "u2seg"
SHARED_FLAGS = ("--manifest", "--shard", "--shard-size", "--device", "--threads", "--no-progress", "--crf",
                "--crf-gaussian-sxy", "--crf-bilateral-srgb", "--crf-iterations")


def flag_definitions(flag: str) -> Counter[str]:
    """Package modules (path relative to the package) -> how many string literals equal to ``flag`` they hold
    (docstrings and comments aside: only exact literals count)."""
    counts: Counter[str] = Counter()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and node.value == flag:
                counts[path.relative_to(PACKAGE).as_posix()] += 1
    return counts


def test_shared_flags_are_defined_once_in_cliargs():
    for flag in SHARED_FLAGS:
        assert flag_definitions(flag) == Counter({"cliargs.py": 1}), flag


def test_stage_writes_its_resolved_config(synthetic: Synthetic, tmp_path: Path):
    """`u2seg cluster-stuff` writes `<model stem>.config.json` beside its model: the flags it ran with (paths
    relative to the record's folder) and the defaults of the flags it was not given."""
    out = tmp_path / "s"
    assert main(["cluster-stuff", "--manifest", str(synthetic.manifest), "--shard-size", str(SHARD_SIZE),
                 "--features-dir", str(synthetic.features), "--k", "2", "--sample-patches", "80", "--iterations", "5",
                 "--out-model", str(out / "m.npz"), "--out-maps", str(out / "maps"),
                 "--summary", str(out / "summary.json")]) == 0
    record = json.loads((out / "m.config.json").read_text())
    assert record["stage"] == "cluster-stuff"
    args = record["args"]
    assert (args["k"], args["sample_patches"], args["iterations"], args["shard_size"]) == (2, 80, 5, SHARD_SIZE)
    assert args["crf"] is False and args["device"] == "cpu" and args["seed"] == 0
    assert (out / args["manifest"]).resolve() == synthetic.manifest.resolve()
    assert args["out_model"] == "m.npz" and args["out_maps"] == "maps"
    assert not (out / "maps" / "config.json").exists()  # the maps folder holds PNGs only


def test_every_stage_names_its_config_record():
    missing = [name for name, (module, _) in STAGES.items()
               if not hasattr(importlib.import_module(module), "config_out")]
    assert missing == []


def test_records_of_one_shard_do_not_collide():
    """The per-shard panoptic merge and its validation report sit in one folder: two different records."""
    shard = importlib.import_module(STAGES["merge-panoptic-shard"][0])
    validate = importlib.import_module(STAGES["validate-panoptic"][0])
    folder = Path("pseudo/panoptic_shards")
    merged = shard.config_out(argparse.Namespace(out_json=folder / "shard_00000.json"))
    report = validate.config_out(argparse.Namespace(report=folder / "shard_00000.validation.json"))
    assert merged == str(folder / "shard_00000.config.json")
    assert report == str(folder / "shard_00000.validation.config.json")
    assert validate.config_out(argparse.Namespace(report=None)) is None

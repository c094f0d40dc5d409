"""One source per default: CLI defaults are the dataclass (paper) values; the rules pass config.yaml's values.

The package never reads the repository's config.yaml: `u2seg train` / `u2seg predict` flags default to
u2seg.detector.params, and the workflow turns each configured key into a flag (u2seg.params.to_flags,
rules/common.smk `config_flags`), so the commands the rules run carry config.yaml's demo values.
"""
from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import fields

import yaml

from tests.conftest import REPO
from tests.snakemake_runner import run_snakemake
from u2seg.detector import predict_cli, train_cli
from u2seg.detector.params import ModelConfig, PredictConfig, TrainConfig
from u2seg.params import field_default, to_flags

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
# config keys that the CLI does not take as flags of the same name (workflow-only settings)
NOT_FLAGS = {"rounds", "self_training", "gpus", "nodes", "cpus_per_gpu", "master_port"}
TRAIN_REQUIRED = ["--instances", "i.json", "--manifest", "m.json", "--out-dir", "out"]
PREDICT_REQUIRED = ["--weights", "w.pth", "--manifest", "m.json", "--out-dir", "out"]


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def _section(name: str) -> dict:
    return {k: v for k, v in CONFIG[name].items() if k not in NOT_FLAGS}


def test_train_cli_defaults_are_the_dataclass_defaults():
    args = _parse(train_cli, TRAIN_REQUIRED)
    for cls in (ModelConfig, TrainConfig):
        for f in fields(cls):
            assert getattr(args, f.name) == field_default(f), f"u2seg train --{f.name}"
    # the paper's schedule, not config.yaml's CPU demo (an installed wheel must not differ)
    assert args.max_iter == 90000 and args.fpn_channels == 256 and args.threads == 0
    assert args.max_iter != CONFIG["train"]["max_iter"]


def test_predict_cli_defaults_are_the_dataclass_defaults():
    args = _parse(predict_cli, PREDICT_REQUIRED)
    for f in fields(PredictConfig):
        assert getattr(args, f.name) == field_default(f), f"u2seg predict --{f.name}"
    assert (args.min_size, args.max_size) == (800, 1333)


def test_config_sections_as_flags_parse_back_to_the_config_values():
    """What the rules pass (to_flags of a section) is read by the CLI as exactly config.yaml's values."""
    model = dict(CONFIG["model"], num_classes=CONFIG["clustering"]["k"], num_stuff=CONFIG["stuff"]["k"])
    train = _section("train")
    args = _parse(train_cli, TRAIN_REQUIRED + shlex.split(to_flags(model) + " " + to_flags(train)))
    checked = 0
    for key, value in {**model, **train}.items():
        assert getattr(args, key) == value, f"--{key}: {getattr(args, key)!r} != config {value!r}"
        checked += 1
    assert checked >= 35
    predict = CONFIG["predict"]
    args = _parse(predict_cli, PREDICT_REQUIRED + shlex.split(to_flags(predict)))
    for key, value in predict.items():
        assert getattr(args, key) == value, f"u2seg predict --{key}: {getattr(args, key)!r} != {value!r}"


def test_ingest_features_and_self_training_sections_are_stage_flags():
    """Every key the rules pass from config ingest / features / train.self_training is a flag of the stage,
    and the configured values parse back."""
    from u2seg import features, ingest
    from u2seg.detector import selftrain_cli

    cases = [
        (ingest, ["--kind", "samples", "--manifest", "m.json", "--skipped", "s.json"], CONFIG["ingest"]),
        (features, ["--manifest", "m.json", "--shard", "0", "--shard-size", "4", "--backbone", "b", "--out", "o"],
         {k: CONFIG["features"][k] for k in ("input_size", "batch_size", "device")}),
        (selftrain_cli, ["--predictions", "p.json", "--previous", "q.json", "--out", "o.json", "--round", "2"],
         {k: CONFIG["train"]["self_training"][k] for k in ("score_thresholds", "iou_thresh", "max_per_image")}),
    ]
    for module, required, values in cases:
        args = _parse(module, required + shlex.split(to_flags(values)))
        for key, value in values.items():
            assert getattr(args, key) == value, f"{module.__name__} --{key}"


def test_to_flags_formats_each_type():
    assert to_flags({"a_b": 1, "on": True, "off": False, "none": None, "xs": [1, "a b"], "s": "x y"}) == \
        "--a-b 1 --on --no-off --none none --xs 1 'a b' --s 'x y'"


def test_dry_run_commands_carry_the_config_values(tmp_path):
    """The default config's train / predict commands pass every model / train / predict key as a flag."""
    proc = run_snakemake(tmp_path, ["predictions"], {"results": str(tmp_path / "results")}, extra=["-n", "-p"],
                         timeout=600)
    train = next(line for line in proc.stdout.splitlines() if re.search(r"-m u2seg train ", line))
    predict = next(line for line in proc.stdout.splitlines() if re.search(r"-m u2seg predict ", line))
    model = dict(CONFIG["model"], num_classes=CONFIG["clustering"]["k"], num_stuff=CONFIG["stuff"]["k"])
    assert to_flags(model) in train
    for key, value in _section("train").items():
        if key == "threads":
            continue
        assert to_flags({key: value}) in train, key
    assert f"--threads {CONFIG['train']['threads']}" in train
    assert to_flags({k: v for k, v in CONFIG["predict"].items() if k != "threads"}) in predict


def test_cpu_config_predicts_at_its_training_sizes():
    """The demo schedule predicts at the short side / cap it trained at (not larger)."""
    train, predict = CONFIG["train"], CONFIG["predict"]
    assert predict["min_size"] == max(train["min_sizes"])
    assert predict["max_size"] == train["max_size"]

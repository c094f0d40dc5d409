"""One source of truth: `u2seg train` / `u2seg predict` defaults are config.yaml's values."""
from __future__ import annotations

import argparse

import yaml

from tests.conftest import REPO
from u2seg.detector import predict_cli, train_cli

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
# config keys that the CLI does not take as flags of the same name (workflow-only settings)
NOT_FLAGS = {"rounds", "self_training", "gpus", "nodes", "cpus_per_gpu", "master_port"}


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_train_cli_defaults_equal_config_yaml():
    args = _parse(train_cli, ["--instances", "i.json", "--manifest", "m.json", "--out-dir", "out"])
    checked = 0
    for section in ("model", "train"):
        for key, value in CONFIG[section].items():
            if key in NOT_FLAGS:
                continue
            assert getattr(args, key) == value, f"u2seg train --{key.replace('_', '-')}: " \
                f"{getattr(args, key)!r} != config.yaml {section}.{key} = {value!r}"
            checked += 1
    assert args.num_classes == CONFIG["clustering"]["k"] and args.num_stuff == CONFIG["stuff"]["k"]
    assert checked >= 35


def test_predict_cli_defaults_equal_config_yaml():
    args = _parse(predict_cli, ["--weights", "w.pth", "--manifest", "m.json", "--out-dir", "out"])
    for key, value in CONFIG["predict"].items():
        assert getattr(args, key) == value, f"u2seg predict --{key}: {getattr(args, key)!r} != {value!r}"


def test_cpu_config_predicts_at_its_training_sizes():
    """The demo schedule predicts at the short side / cap it trained at (not larger)."""
    train, predict = CONFIG["train"], CONFIG["predict"]
    assert predict["min_size"] == max(train["min_sizes"])
    assert predict["max_size"] == train["max_size"]

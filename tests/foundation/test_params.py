"""Parameters: flags from dataclasses, resolved configs written with the outputs, installs agree on defaults."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO
from u2seg import __version__
from u2seg.cli import STAGES, main, stage_defaults
from u2seg.params import (STUFF_CLUSTERS, add_dataclass_arguments, dataclass_from_args, record_beside,
                          record_inside, resolved_config)


@dataclass
class _Example:
    size: int = 3  # the size
    name: str | None = "a"
    flag: bool = True
    values: list[float] = field(default_factory=lambda: [0.5, 1.0])


def test_dataclass_flags_round_trip():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, _Example)
    assert dataclass_from_args(_Example, parser.parse_args([])) == _Example()
    args = parser.parse_args(["--size", "7", "--name", "none", "--no-flag", "--values", "2", "3"])
    assert dataclass_from_args(_Example, args) == _Example(7, None, False, [2.0, 3.0])
    size = next(a for a in parser._actions if a.dest == "size")
    assert size.help == "the size (default: 3)"


def test_stuff_cluster_default_is_one_constant():
    defaults = stage_defaults()
    assert STUFF_CLUSTERS == 27
    assert defaults["evaluate"]["num_stuff"] == defaults["train"]["num_stuff"] == STUFF_CLUSTERS


def test_record_paths():
    assert record_beside("r/samples/manifest.json") == os.path.join("r/samples", "manifest.config.json")
    assert record_beside("r/f/shard_00001.zarr/") == os.path.join("r/f", "shard_00001.config.json")
    assert record_inside("r/train/r1") == os.path.join("r/train/r1", "config.json")
    assert record_beside(None) is None and record_inside("") is None


def test_resolved_config_is_portable(tmp_path):
    """Absolute paths are stored relative to the record's folder: the same run elsewhere, the same record."""
    records = []
    for root in (tmp_path / "a", tmp_path / "b"):
        args = argparse.Namespace(manifest=root / "ds" / "manifest.json", out=str(root / "ds" / "x.json"),
                                  backbone="resnet50", sizes=[1, 2], func=print, weights=None)
        records.append(resolved_config("demo", args, root / "ds"))
    assert records[0] == records[1]
    assert records[0] == {"stage": "demo", "u2seg_version": __version__,
                          "args": {"backbone": "resnet50", "manifest": "manifest.json", "out": "x.json",
                                   "sizes": [1, 2], "weights": None}}


def test_a_stage_run_writes_its_resolved_config(tmp_path):
    table = tmp_path / "table.json"
    metrics = tmp_path / "eval" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"dataset": "coco-val", "model": "m", "images": 2}))
    code = main(["zero-shot-table", "--model", "m", "--metrics", str(metrics), "--out-json", str(table),
                 "--out-md", str(tmp_path / "table.md")])
    assert code == 0 and table.is_file()
    record = json.loads((tmp_path / "table.config.json").read_text())
    assert record["stage"] == "zero-shot-table" and record["u2seg_version"] == __version__
    assert record["args"]["metrics"] == ["eval/metrics.json"] and record["args"]["out_json"] == "table.json"


def test_no_config_record_after_a_failed_run(tmp_path):
    code = main(["zero-shot-table", "--model", "m", "--metrics", str(tmp_path / "missing.json"),
                 "--out-json", str(tmp_path / "t.json"), "--out-md", str(tmp_path / "t.md")])
    assert code != 0 and not (tmp_path / "t.config.json").exists()


def test_stage_defaults_cover_every_stage():
    defaults = stage_defaults()
    assert set(STAGES) <= set(defaults)
    assert defaults["train"]["max_iter"] == 90000 and defaults["train"]["fpn_channels"] == 256
    assert defaults["predict"]["min_size"] == 800
    assert {"finetune split", "report features"} <= set(defaults)
    json.dumps(defaults)  # plain JSON types


_PRINT_DEFAULTS = "import json, u2seg, u2seg.cli; print(json.dumps({'file': u2seg.__file__, " \
                  "'defaults': u2seg.cli.stage_defaults()}, sort_keys=True))"


@pytest.mark.slow
def test_installed_wheel_has_the_checkout_defaults(tmp_path):
    """The built wheel, installed apart from the checkout and run elsewhere, prints the same defaults."""
    src = tmp_path / "src"  # the files the wheel is built from (no build folders left in the checkout)
    shutil.copytree(REPO / "workflow" / "u2seg", src / "workflow" / "u2seg",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    (wheel,) = wheels.glob("u2seg-*.whl")
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def defaults(pythonpath: Path) -> dict:
        env = dict(os.environ, PYTHONPATH=str(pythonpath))
        proc = subprocess.run([sys.executable, "-c", _PRINT_DEFAULTS], capture_output=True,
                              text=True, timeout=300, cwd=elsewhere, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.splitlines()[-1])

    installed, checkout = defaults(site), defaults(REPO / "workflow")
    assert Path(installed["file"]).is_relative_to(site), installed["file"]
    assert Path(checkout["file"]).is_relative_to(REPO), checkout["file"]
    assert installed["defaults"] == checkout["defaults"]
    assert installed["defaults"]["train"]["max_iter"] == 90000

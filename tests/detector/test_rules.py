"""rules/train.smk: the round DAG and the commands it builds (Snakemake dry run, no training)."""
from __future__ import annotations

import json
import re

from tests.conftest import run_snakemake

from .synth import make_dataset


def test_rounds_dag_and_commands(tmp_path):
    data = make_dataset(tmp_path / "data", n_images=2)
    ds_dir = tmp_path / "results" / "samples"
    ds_dir.mkdir(parents=True)
    manifest = json.loads(data["manifest"].read_text())
    manifest["images"][1].update(width=8000, height=9000)  # the dry run reads only the sizes
    (ds_dir / "manifest.json").write_text(json.dumps(manifest))
    (ds_dir / "skipped.json").write_text("[]")
    cfg = tmp_path / "rounds.yaml"
    cfg.write_text("train:\n  rounds: 2\nclustering:\n  k: 5\n")
    proc = run_snakemake(tmp_path, ["predictions"], extra=["-n", "-p"], configfiles=[cfg])
    out = proc.stdout
    train_cmds = [line for line in out.splitlines() if " -m u2seg train " in line]
    assert len(train_cmds) == 2
    r1, r2 = sorted(train_cmds, key=lambda c: "--init" in c)
    assert "pseudo/instances.json" in r1 and "--init" not in r1 and "--max-iter 120" in r1
    assert "--init" in r2 and "train/r1/model_final.pth" in r2 and "train/r2/pseudo_instances.json" in r2
    assert "--base-lr 0.005" in r2 and "--max-iter 60" in r2 and "--no-droploss" in r2
    for cmd in train_cmds:
        assert "--num-classes 5" in cmd and "--num-stuff 27" in cmd
    labels = [line for line in out.splitlines() if "self-train-labels" in line]
    assert len(labels) == 1 and "--round 2" in labels[0] and "predict/samples-r1/instances_results.json" in labels[0]
    predicts = [line for line in out.splitlines() if " -m u2seg predict " in line]
    assert {("train/r1/" in c, "train/r2/" in c) for c in predicts} == {(True, False), (False, True)}
    assert out.count("rule train_round:") == 2 and out.count("rule self_train_labels:") == 1
    # predict's memory request: 6000 MB + the detections per image + 16 B per pixel of the largest image
    mems = re.findall(r"rule predict:.*?mem_mb=(\d+)", out, re.S)
    assert mems == [str(int(6000 + 120.6 * 2 / 1024 + 16 * 9000 * 8000 / 2**20))] * 2, mems

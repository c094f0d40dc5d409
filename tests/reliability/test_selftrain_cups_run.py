"""`selftrain.method: cups` end to end through Snakemake on the sample photos: from the clean run's round 1,
`predictions` runs CUPS's momentum-teacher self-training (its teacher with TTA) and predicts with the student;
the report shows both runs."""
from __future__ import annotations

import json
import shutil

import torch

from tests.configs import tiny_config
from tests.snakemake_runner import run_snakemake

CUPS = {"method": "cups", "cups": {"rounds": 2, "round_steps": 1, "batch_size": 1, "checkpoint_period": 1,
                                   "teacher_min_size": 64, "teacher_max_size": 96, "jitter_min_sizes": [64],
                                   "jitter_max_size": 96, "teacher_tta": True}}


def test_cups_self_training_runs_after_round_one(clean_run_a, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(clean_run_a.workdir, work, symlinks=True)  # round 1 done (copy2 keeps the times)
    proc = run_snakemake(work, ["predictions", "inspect"], tiny_config("small", dataset="samples", selftrain=CUPS))
    out = work / "results" / "samples"
    assert "rule train_round" not in proc.stdout  # round 1 is reused, not retrained
    cups = out / "train" / "cups"
    summary = json.loads((cups / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["rounds"] == 2 and summary["instance_thresholds"] == [0.7, 0.75]
    rows = [json.loads(x) for x in (cups / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [1, 2] and [r["round"] for r in rows] == [1, 2]
    student = torch.load(cups / "model_final.pth", weights_only=True)["model"]
    teacher = torch.load(cups / "teacher_final.pth", weights_only=True)["model"]
    r1 = torch.load(out / "train" / "r1" / "model_final.pth", weights_only=True)["model"]
    head = "roi_heads.box_predictors.0.cls_score.weight"
    assert not torch.equal(student[head], r1[head]) and not torch.equal(teacher[head], student[head])
    assert all(torch.equal(student[k], r1[k]) for k in r1 if k.startswith("backbone."))  # only the heads train
    assert (out / "predict" / "samples-cups" / "panoptic.json").is_file()
    assert (work / "results" / "report" / "samples" / "train" / "cups" / "loss.png").is_file()
    assert not (out / "train" / "r2").exists()

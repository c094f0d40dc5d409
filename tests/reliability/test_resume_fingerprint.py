"""A stale resume at the workflow level: changing only `stuff.seed` rewrites the stuff and semantic labels;
the rerun of `train_round` must train again from scratch (one log line naming the semantic labels), not
resume at the last iteration and write the old model again."""
from __future__ import annotations

import json

import torch

from tests.configs import tiny_config
from tests.reliability import helpers
from tests.snakemake_runner import run_snakemake


def test_changed_stuff_seed_retrains_instead_of_resuming_the_old_model(tmp_path):
    cfg = tiny_config("small", dataset="samples")
    run_snakemake(tmp_path, ["train"], cfg)
    out = tmp_path / "results" / "samples"
    semantic_before = helpers.digests(out / "pseudo" / "semantic")
    weights_before = torch.load(out / "train" / "r1" / "model_final.pth", weights_only=True)["model"]
    assert sorted(p.name for p in (out / "train" / "r1" / "work").glob("model_*.pth"))  # state a rerun could reuse

    run_snakemake(tmp_path, ["train"], dict(cfg, stuff=dict(cfg["stuff"], seed=1)))
    assert helpers.digests(out / "pseudo" / "semantic") != semantic_before  # the premise: other labels
    log = (tmp_path / "results" / "logs" / "samples" / "train" / "r1.log").read_text()
    fresh = [line for line in log.splitlines() if "training from scratch" in line]
    assert len(fresh) == 1 and "semantic changed" in fresh[0] and "instances changed" not in fresh[0], log[-3000:]
    assert "resumed from" not in log
    summary = json.loads((out / "train" / "r1" / "summary.json").read_text())
    assert summary["resumed_at"] == 0
    weights_after = torch.load(out / "train" / "r1" / "model_final.pth", weights_only=True)["model"]
    assert any(not torch.equal(weights_before[k], weights_after[k]) for k in weights_before)

"""Snakemake rules of the evaluation stage (isolated workdir with a space in its path)."""
from __future__ import annotations

import json

import numpy as np

from tests.conftest import COCO_MINI, require_shared, run_snakemake
from u2seg import atomic
from u2seg.coco_format import instance_annotation


def test_evaluate_maskcut_and_coco_ready_rules(tmp_path):
    coco = require_shared(COCO_MINI)
    ann_path = coco / "annotations" / "instances_val2017.json"
    images = sorted(json.loads(ann_path.read_text())["images"], key=lambda im: im["id"])[:4]
    work = tmp_path / "work dir"
    res = work / "results"
    # the download step first (the ingest checkpoint depends on it), then a hand-made 4-image manifest
    run_snakemake(work, [str(res / "coco" / "val_ready.json")], config={"coco_root": str(coco), "results": str(res)})
    manifest = {"dataset": {"kind": "coco", "split": "val", "limit": 4}, "root": str(coco / "val2017"),
                "images": [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in images],
                "annotations": str(ann_path.resolve()), "panoptic": None}
    atomic.write_json(res / "coco-val" / "manifest.json", manifest)
    anns = []
    for im in images:
        m = np.zeros((im["height"], im["width"]), bool)
        m[20:200, 30:300] = True
        anns.append(instance_annotation(m, len(anns) + 1, im["id"], 1))
    atomic.write_json(res / "coco-val" / "maskcut" / "masks.json",
                      {"images": manifest["images"], "annotations": anns, "categories": [{"id": 1, "name": "fg"}]})
    run_snakemake(work, [str(res / "eval" / "coco-val" / "maskcut" / "metrics.json"),
                         str(res / "coco" / "val_ready.json")],
                  config={"coco_root": str(coco), "results": str(res)})
    metrics = json.loads((res / "eval" / "coco-val" / "maskcut" / "metrics.json").read_text())
    assert metrics["model"] == "maskcut" and metrics["images"] == 4
    assert metrics["instance"]["class_agnostic"]["bbox"]["AR100"] is not None
    assert (res / "eval" / "coco-val" / "maskcut" / "metrics.md").read_text().startswith("# Evaluation")
    ready = json.loads((res / "coco" / "val_ready.json").read_text())
    assert ready["downloaded"] == [] and "annotations" in ready["present"]
    assert (res / "benchmarks" / "eval" / "coco-val" / "maskcut.tsv").is_file()

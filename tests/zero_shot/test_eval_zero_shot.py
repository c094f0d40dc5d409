"""Acceptance: one config names three evaluation sets; `eval_zero_shot` trains once and writes one table.

The sets: coco-mini val (the `coco` kind), the same images re-laid as a generic COCO-format dataset
(PNG files, json elsewhere) and the 2-image COCO panoptic sample (panoptic GT only, 133 categories).
The model: a tiny detector trained for a few iterations on the `samples` pseudo-labels (CPU).
"""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import COCO_MINI, COCO_PANOPTIC_SAMPLE, require_shared
from tests.configs import tiny_config
from tests.snakemake_runner import run_snakemake
from u2seg import atomic
from u2seg.images import load_rgb

N_VAL = 3


def _relay_coco_mini(coco: Path, out: Path) -> dict:
    """The first N_VAL coco-mini val images (by id) as PNGs + their annotations in a json elsewhere."""
    data = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:N_VAL]
    keep = {im["id"] for im in images}
    relaid = []
    for im in images:
        rel = f"png/{Path(im['file_name']).stem}.png"
        atomic.save_png(out / "images" / rel, load_rgb(coco / "val2017" / im["file_name"]))
        relaid.append(dict(im, file_name=rel))
    atomic.write_json(out / "labels" / "val.json", {
        "images": relaid, "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
        "categories": data["categories"]})
    return {"images": str(out / "images"), "instances": str(out / "labels" / "val.json")}


def test_eval_zero_shot_writes_one_row_per_set(tmp_path):
    coco = require_shared(COCO_MINI)
    sample = require_shared(COCO_PANOPTIC_SAMPLE)
    config = tiny_config(
        "small", dataset="samples", coco_root=str(coco), limit=N_VAL,
        predict={"min_size": 96, "max_size": 128, "device": "cpu", "threads": 2},
        datasets={
            "mini-generic": _relay_coco_mini(coco, tmp_path / "relaid"),
            "pansample": {"images": str(sample / "val2017"),
                          "panoptic": str(sample / "annotations" / "panoptic_val2017.json"),
                          "panoptic_dir": str(sample / "annotations" / "panoptic_val2017")},
        },
        zero_shot={"eval": ["coco-val", "mini-generic", "pansample"]},
    )
    work = tmp_path / "work"
    run_snakemake(work, ["eval_zero_shot"], config, timeout=1200)
    out = work / "results" / "zero_shot" / "samples-r1"
    table = json.loads((out / "table.json").read_text())
    rows = {r["dataset"]: r for r in table["rows"]}
    assert list(rows) == ["coco-val", "mini-generic", "pansample"]
    assert [rows[d]["images"] for d in rows] == [N_VAL, N_VAL, 2]
    # the same model on the same pixels: the generic set's numbers are the coco kind's
    numbers = [c for c in table["columns"] if c not in ("dataset", "images")]
    assert {c: rows["mini-generic"][c] for c in numbers} == {c: rows["coco-val"][c] for c in numbers}
    for r in rows.values():
        assert r["box AP"] is not None and r["mask AR100"] is not None and r["majority mask AP"] is not None
    # panoptic sample: PQ with its stuff classes (COCO panoptic GT), and the things-only PQ of coco-mini
    pan = json.loads((work / "results" / "eval" / "pansample" / "samples-r1" / "metrics.json").read_text())
    assert pan["ground_truth"]["panoptic"]["kind"] == "COCO panoptic GT"
    assert pan["panoptic"]["categories"]["stuff"] > 0 and rows["pansample"]["PQ u2seg"] is not None
    assert rows["coco-val"]["PQ u2seg"] is not None
    md = (out / "table.md").read_text()
    assert md.count("\n| ") >= 4 and "| pansample | 2 |" in md
    # one model trained once, predicted on each set
    assert (work / "results" / "samples" / "train" / "r1" / "model_final.pth").is_file()
    for ds in rows:
        assert (work / "results" / ds / "predict" / "samples-r1" / "panoptic.json").is_file()
    # each stage wrote the values it ran with (config.yaml's, passed as flags) beside its outputs
    res = work / "results"

    def record(path: Path) -> dict:
        data = json.loads(path.read_text())
        assert data["u2seg_version"] and not any(str(tmp_path) in json.dumps(v) for v in data["args"].values())
        return data

    train = record(res / "samples" / "train" / "r1" / "config.json")
    assert train["stage"] == "train" and train["args"]["max_iter"] == 6 and train["args"]["fpn_channels"] == 16
    assert train["args"]["num_classes"] == 3 and train["args"]["num_stuff"] == 4
    predict = record(res / "coco-val" / "predict" / "samples-r1" / "config.json")
    assert (predict["args"]["min_size"], predict["args"]["max_size"]) == (96, 128)
    evaluation = record(res / "eval" / "coco-val" / "samples-r1" / "metrics.config.json")
    assert evaluation["stage"] == "evaluate" and evaluation["args"]["num_stuff"] == 4
    assert evaluation["args"]["out_json"] == "metrics.json"
    assert record(res / "samples" / "manifest.config.json")["stage"] == "ingest"
    assert record(res / "samples" / "features" / "shard_00000.config.json")["args"]["input_size"] == 128
    assert record(out / "table.config.json")["stage"] == "zero-shot-table"

"""Presets in configs/: each validates over config.yaml and dry-runs the whole DAG."""
from __future__ import annotations

import copy
import json
import os
import re
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import COCO_MINI, REPO, require_shared
from tests.snakemake_runner import run_snakemake
from u2seg.config_types import coerce

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
PRESETS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))


def _merge(base: dict, over: dict) -> dict:
    """Snakemake's --configfile merge (nested dicts merged key by key)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_the_three_presets_exist():
    assert {"u2seg-coco.yaml", "cutler.yaml", "gpu.yaml"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_valid_and_documented(name):
    text = (REPO / "configs" / name).read_text()
    preset = yaml.safe_load(text)
    merged = coerce(_merge(CONFIG, preset), SCHEMA)
    jsonschema.validate(merged, SCHEMA)
    assert merged == _merge(CONFIG, preset), "a preset value needed type coercion: write it with its type"
    header = text.split("\n\n", 1)[0]
    for word in ("Needs", "Cost" if name == "gpu.yaml" else "GPU-hours", "Targets"):
        assert word in header, f"configs/{name}: the header comment does not say {word!r}"


def test_u2seg_coco_is_the_paper_recipe():
    cfg = _merge(CONFIG, yaml.safe_load((REPO / "configs" / "u2seg-coco.yaml").read_text()))
    assert cfg["backbone"] == "dino_vitb8" and cfg["features"]["input_size"] == 480
    assert cfg["embedding"]["method"] == "crop_cls" and cfg["clustering"]["k"] == 300
    m, t, p = cfg["model"], cfg["train"], cfg["predict"]
    assert m["backbone"] == "resnet50" and m["backbone_weights"].endswith("dino_RN50_pretrain_d2_format.pkl")
    assert (m["norm"], m["fpn_norm"], m["fpn_channels"]) == ("bn", "bn", 256)
    assert (m["rpn_post_nms_topk_train"], m["roi_batch_per_image"]) == (4000, 512)
    assert (t["batch_size"], t["max_iter"], t["gamma"]) == (16, 90000, 0.02)
    assert t["steps"] == [round(210000 * 90000 / 270000), int(250000 * 90000 / 270000)]
    assert t["min_sizes"] == [240, 320, 480, 640, 672, 704, 736, 768, 800, 1024] and t["max_size"] == 1333
    assert (p["min_size"], p["max_size"]) == (800, 1333)
    assert "k: 800" in (REPO / "configs" / "u2seg-coco.yaml").read_text()


def _write_ingested(results: Path, split: str) -> None:
    """A finished ingest of coco-mini's split (so that the dry run shows the per-shard jobs too)."""
    coco = json.loads((COCO_MINI / "annotations" / f"instances_{split}2017.json").read_text())
    ready = results / "coco" / f"{split}_ready.json"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text("{}")
    ds = results / f"coco-{split}"
    ds.mkdir(parents=True, exist_ok=True)
    images = [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in coco["images"]]
    manifest = {"dataset": {"kind": "coco", "split": split}, "root": str(COCO_MINI / f"{split}2017"),
                "images": images, "annotations": None}
    later = time.time() + 1
    for name, obj in (("manifest.json", manifest), ("skipped.json", [])):
        (ds / name).write_text(json.dumps(obj))
        os.utime(ds / name, (later, later))


def _dry_run(tmp_path: Path, preset: str, *extra: str, config: tuple[str, ...] = ()) -> str:
    require_shared(COCO_MINI)
    results = tmp_path / "results"
    _write_ingested(results, "train")
    proc = run_snakemake(tmp_path, ["-n", "-p"], {"coco_root": str(COCO_MINI), "results": str(results)},
                         extra=[*extra, *(["--config", *config] if config else [])],
                         configfiles=[REPO / "configs" / preset], cores=16, timeout=600)
    return proc.stdout


def _job(out: str, rule: str) -> list[str]:
    """The printed blocks (rule header .. shell command) of every job of ``rule``."""
    blocks = re.split(r"\n(?=\[[^\]]+\]\n(?:local)?(?:rule|checkpoint) )", out)
    return [b for b in blocks if re.search(rf"^(?:local)?(?:rule|checkpoint) {rule}:", b, flags=re.M)]


def test_u2seg_coco_dry_run_is_paper_scale_with_gpu_resources(tmp_path):
    out = _dry_run(tmp_path, "u2seg-coco.yaml", "--resources", "gpu=8")
    # pipeline.fused: one shard_pass job per shard instead of features_shard -> maskcut -> embed -> stego_infer
    for rule in ("shard_pass", "cluster_instances", "stuff_maps", "concat_panoptic", "train_round", "predict"):
        assert _job(out, rule), f"no {rule} job in the dry run"
    assert not _job(out, "features_shard") and not _job(out, "maskcut") and not _job(out, "stego_infer")
    (train,) = _job(out, "train_round")
    assert re.search(r"resources: .*\bgpu=8\b", train) and re.search(r"\bcpus_per_gpu=4\b", train), train
    assert "-m torch.distributed.run --nproc-per-node 8 --standalone --nnodes 1 -m u2seg train" in train
    for flag in ("--num-classes 300", "--max-iter 90000", "--steps 70000 83333", "--batch-size 16",
                 "--lr-reference-batch 16", "--norm bn", "--fpn-norm bn", "--fpn-channels 256",
                 "--rpn-post-nms-topk-train 4000", "--roi-batch-per-image 512", "--max-size 1333",
                 "--backbone resnet50", "--device cuda", "--threads 4"):
        assert flag in train, flag
    for rule in ("shard_pass", "predict"):
        assert all(re.search(r"resources: .*\bgpu=1\b", b) for b in _job(out, rule)), rule
    shard_pass = _job(out, "shard_pass")[0]
    assert "--backbone dino_vitb8" in shard_pass and ":: stego infer " in shard_pass
    assert "--min-size 800 --max-size 1333" in _job(out, "predict")[0]


def test_cutler_dry_run_has_three_rounds_with_droploss_and_copy_paste(tmp_path):
    out = _dry_run(tmp_path, "cutler.yaml")
    trains = _job(out, "train_round")
    assert len(trains) == 3 and len(_job(out, "self_train_labels")) == 2
    r1 = next(b for b in trains if "--init" not in b)
    assert "--num-classes 1" in r1 and "--droploss" in r1 and "--copy-paste " in r1 and "--max-iter 160000" in r1
    later = [b for b in trains if "--init" in b]
    assert all("--no-droploss" in b and "--base-lr 0.005" in b and "--max-iter 80000" in b for b in later)


def test_gpu_preset_puts_every_stage_on_cuda(tmp_path):
    out = _dry_run(tmp_path, "gpu.yaml", config=("dataset=coco", "split=train"))
    for rule in ("features_shard", "maskcut", "embed", "cluster_instances", "stuff_maps", "train_round",
                 "predict"):
        jobs = _job(out, rule)
        assert jobs and all("--device cuda" in b for b in jobs), rule

"""The arithmetic of benchmarks/cost_model.py: disk, GPU-hours and CPU-hours from the per-unit figures,
projections labelled as such until gpu_check.sh's figures replace them."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.script_module import load_script

REPO = Path(__file__).resolve().parents[2]


cm = load_script(REPO / "benchmarks" / "cost_model.py")
COCO, IMAGENET = cm.PRESETS


def test_presets_match_the_config_files():
    import yaml

    for p in cm.PRESETS:
        cfg = yaml.safe_load((REPO / "configs" / f"{p.name}.yaml").read_text())
        assert cfg["features"]["shard_size"] == p.shard_size
        assert cfg["features"]["keep_features"] == p.keep_features
        assert cfg["maskcut"]["n_masks"] == p.n_masks
        assert cfg["clustering"]["k"] == p.k
        assert cfg["train"]["max_iter"] == p.max_iter
        assert cfg.get("stuff", {}).get("model", "kmeans") == p.stuff_model


def test_feature_disk():
    figs = cm.default_figures()
    b = 60 * 60 * 768 * 2 + 768 * 4
    assert figs["feature_bytes_per_image"].value == b
    d = cm.feature_disk(IMAGENET, figs, jobs_in_flight=8)
    assert d["kept_gb"] == pytest.approx(1_281_167 * b / 1e9)
    assert d["not_kept_gb"] == d["preset_gb"] == 0  # fused k-means: sample shares + a maps forward, no feature file
    assert d["pass_memory_gb"] == pytest.approx(IMAGENET.shard_size * b / 1e9)
    assert d["passes_memory_gb"] == pytest.approx(8 * IMAGENET.shard_size * b / 1e9)
    c = cm.feature_disk(COCO, figs, jobs_in_flight=2)
    assert c["not_kept_gb"] == 0                                   # stego_checkpoint: features in the pass's memory
    assert c["preset_gb"] == c["kept_gb"]                          # the preset keeps them
    small = replace(COCO, images=300, keep_features=False)         # 2 shards: never more than exist
    assert cm.feature_disk(small, figs, 8)["passes_memory_gb"] == pytest.approx(2 * COCO.shard_size * b / 1e9)
    trained = replace(IMAGENET, stuff_model="stego")              # its kNN table and training read every shard
    assert cm.feature_disk(trained, figs, 8)["preset_gb"] == pytest.approx(1_281_167 * b / 1e9)


def test_projection_and_hours():
    figs = cm.default_figures()
    assert cm.vit_forward_flops(10, dim=4, depth=2) == 2 * (24 * 10 * 16 + 4 * 100 * 4)
    assert cm.forwards_per_image(COCO) == 6 and cm.forwards_per_image(IMAGENET) == 5
    assert cm.forwards_per_image(replace(COCO, stego_flip=False)) == 4
    r = cm.cost(IMAGENET, figs, jobs_in_flight=8, cpu_cores_per_gpu=4)
    gpu_ips = cm.ASSUMED_GPU_FLOPS / (5 * cm.vit_forward_flops(3600))  # + the k-means maps' forward
    assert r["fused_pass"]["gpu_images_per_s"] == pytest.approx(gpu_ips, abs=0.01)
    assert r["fused_pass"]["images_per_s"] == pytest.approx(4 / 0.8)   # 4 cores cannot keep up: CPU bound
    assert r["fused_pass"]["gpu_hours"] == pytest.approx(1_281_167 / 5 / 3600, abs=0.05)
    assert "projection, not measured" in r["fused_pass"]["source"]
    assert r["maskcut_crf_cpu_hours"] == pytest.approx(1_281_167 * 0.8 / 3600, abs=0.05)
    assert r["training_gpu_hours"] == pytest.approx(90_000 * 0.317 * 8 / 3600, abs=0.05)
    assert r["clustering_cpu_hours"] == pytest.approx(163.1 * 3 * 1.281167 * 2 / 3600, abs=0.005)
    assert "projection, not measured" in r["sources"]["train_s_per_iter_8gpu_batch16"]


def test_gpu_figures_replace_the_projections(tmp_path: Path):
    f = tmp_path / "figures.txt"
    f.write_text("date: 2026-12-09T00:00:00Z\ngpu: NVIDIA H100, 80 GB\nshard_pass.images_per_s: 12.5\n"
                 "u2seg_coco_speed.result: " + json.dumps({"s_per_iter_median": 0.25}) + "\n")
    figs = cm.apply_gpu_figures(cm.default_figures(), cm.read_gpu_figures(f))
    r = cm.cost(IMAGENET, figs)
    # gpu_check.sh measures the pass (4 forwards); the k-means maps' forward (stuff_maps_shard) scales it
    assert cm.forwards_per_image(IMAGENET) == cm.MEASURED_FORWARDS + 1
    assert r["fused_pass"]["images_per_s"] == pytest.approx(12.5 * 4 / 5)  # measured: not capped again
    assert r["fused_pass"]["gpu_hours"] == pytest.approx(1_281_167 / 10 / 3600, abs=0.05)
    r = cm.cost(COCO, figs)                          # 6 forwards (STEGO with flip): scaled
    assert r["fused_pass"]["images_per_s"] == pytest.approx(12.5 * 4 / 6, abs=0.01)
    assert "projection" not in r["fused_pass"]["source"] and "H100" in r["fused_pass"]["source"]
    assert r["training_gpu_hours"] == pytest.approx(90_000 * 0.25 * 8 / 3600, abs=0.05)
    # a failed step leaves the projection in place
    f.write_text("shard_pass.images_per_s: \nu2seg_coco_speed.result: \n")
    figs = cm.apply_gpu_figures(cm.default_figures(), cm.read_gpu_figures(f))
    assert not figs["gpu_pass_images_per_s"].measured


def test_markdown_lists_both_datasets(capsys):
    assert cm.main(["--markdown"]) == 0
    out = capsys.readouterr().out
    assert "COCO train2017" in out and "ImageNet-1K" in out and "GPU-hours" in out

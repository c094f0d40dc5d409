"""pipeline.fused through Snakemake: the fused per-shard rule gives the separate jobs' pseudo-labels byte for byte
(masks json, embeddings, stuff maps, panoptic json + PNGs: every file benchmarks/outputs_digest.py compares)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.configs import tiny_config
from tests.conftest import run_snakemake
from tests.pseudo.test_shard_pass import dino_weights_and_checkpoint
from tests.script_module import load_script

REPO = Path(__file__).resolve().parents[2]


def _digest(root: Path) -> dict[str, str]:
    return load_script(REPO / "benchmarks" / "outputs_digest.py").digest(root)


def _run(work: Path, config: dict) -> dict[str, str]:
    run_snakemake(work, ["pseudo_labels"], config)
    return _digest(work / "results")


def _same(separate: dict[str, str], fused: dict[str, str], ignore: tuple[str, ...] = ()) -> None:
    separate = {k: v for k, v in separate.items() if k not in ignore}
    fused = {k: v for k, v in fused.items() if k not in ignore}
    only = sorted(separate.keys() ^ fused.keys())
    differ = sorted(k for k in separate.keys() & fused.keys() if separate[k] != fused[k])
    assert not only and not differ, f"files in one run only: {only[:10]}; differing: {differ[:10]}"


def test_fused_pass_equals_the_separate_jobs_on_the_samples(tmp_path):
    base = tiny_config("small", dataset="samples")
    separate = _run(tmp_path / "separate", dict(base, pipeline={"fused": False}))
    fused = _run(tmp_path / "fused", dict(base, pipeline={"fused": True}))
    for key in ("samples/maskcut/shard_00001.json", "samples/pseudo/embed/shard_00001.npz", "samples/pseudo/panoptic.json",
                "samples/features/shard_00001.zarr/zarr.json"):
        assert key in separate
    assert any(k.startswith("samples/pseudo/stuff/") for k in separate)
    assert any(k.startswith("samples/pseudo/panoptic/") for k in separate)
    _same(separate, fused)
    logs = sorted(p.name for p in (tmp_path / "fused" / "results" / "logs" / "samples" / "shard_pass").iterdir())
    assert logs == ["shard_00000.log", "shard_00001.log"]  # the fused rule made the shards
    assert not (tmp_path / "fused" / "results" / "logs" / "samples" / "maskcut").exists()


@pytest.mark.slow
def test_fused_stego_checkpoint_without_kept_features(tmp_path):
    """stuff.model stego_checkpoint, features not kept: no zarr shard is ever written to the results, the
    checkpoint's ViT equals the backbone (one forward) and the pseudo-labels equal the separate jobs'."""
    dino, ckpt = dino_weights_and_checkpoint(tmp_path)
    base = tiny_config("small", dataset="samples", backbone="dino_vits8", weights=str(dino),
                       stuff={"model": "stego_checkpoint", "checkpoint": str(ckpt), "k": 4,
                              "stego_inference": {"flip": False, "crop": "full", "crop_size": 320}})
    base["features"] = dict(base["features"], keep_features=False)
    separate = _run(tmp_path / "separate", dict(base, pipeline={"fused": False}))
    fused = _run(tmp_path / "fused", dict(base, pipeline={"fused": True}))
    assert not list((tmp_path / "fused" / "results" / "samples" / "features").glob("*.zarr"))
    log = (tmp_path / "fused" / "results" / "logs" / "samples" / "shard_pass" / "shard_00000.log").read_text()
    assert "one forward" in log
    assert any(k.startswith("samples/pseudo/stego/maps/shard_00001/") for k in separate)
    _same(separate, fused)


def test_fused_kmeans_without_kept_features(tmp_path):
    """stuff.model kmeans, features not kept: the pass writes the shard's share of the stuff sample (no zarr
    shard in the results), stuff_fit + stuff_maps_shard + stuff_gather give the separate jobs' stuff model, maps,
    summary and panoptic pseudo-labels byte for byte. Only the resolved-config records of the stuff stage
    differ (other stages, other flags): the separate cluster-stuff's stuff_model.config.json, the gather's
    stuff_summary.config.json."""
    base = tiny_config("small", dataset="samples")
    base["features"] = dict(base["features"], keep_features=False)
    base["stuff"] = dict(base["stuff"], model="kmeans", crf={"enabled": True})  # the CRF reads the images
    separate = _run(tmp_path / "separate", dict(base, pipeline={"fused": False}))
    fused = _run(tmp_path / "fused", dict(base, pipeline={"fused": True}))
    results = tmp_path / "fused" / "results" / "samples"
    assert not list(results.rglob("*.zarr"))  # no feature shard was ever written to the results
    for key in ("samples/pseudo/stuff_model.npz", "samples/pseudo/stuff_summary.json", "samples/pseudo/panoptic.json"):
        assert key in separate and key in fused
    assert any(k.startswith("samples/pseudo/stuff/") and k.endswith(".png") for k in fused)
    records = ("samples/pseudo/stuff_model.config.json", "samples/pseudo/stuff_summary.config.json")
    assert records[0] in separate and records[1] in fused
    _same(separate, fused, ignore=records)
    logs = tmp_path / "fused" / "results" / "logs" / "samples"
    assert (logs / "pseudo" / "stuff_fit.log").is_file() and (logs / "pseudo" / "stuff_maps_00001.log").is_file()
    assert "stuff sample rows" in (logs / "shard_pass" / "shard_00000.log").read_text()
    assert not list(results.rglob("stuff_sample/*.npy"))  # temp(): removed after the fit


@pytest.mark.slow
def test_fused_trained_stego_head_equals_the_separate_jobs(tmp_path):
    """stuff.model stego (a head trained on the stored features), features not kept: the pass writes the zarr
    shard as temp() for the kNN table and the training, which see the same bytes, so the STEGO model, its maps
    and the pseudo-labels equal the separate jobs'; the shards are gone afterwards."""
    from tests.pseudo.test_stego_rules import TINY_STEGO

    base = tiny_config("small", dataset="samples", stuff={"model": "stego", "k": 4, "stego": TINY_STEGO})
    base["features"] = dict(base["features"], keep_features=False)
    separate = _run(tmp_path / "separate", dict(base, pipeline={"fused": False}))
    fused = _run(tmp_path / "fused", dict(base, pipeline={"fused": True}))
    assert "samples/pseudo/stego/trained.npz" in separate
    assert any(k.startswith("samples/pseudo/stego/maps/shard_00001/") for k in separate)
    _same(separate, fused)
    assert (tmp_path / "fused" / "results" / "logs" / "samples" / "shard_pass" / "shard_00001.log").is_file()
    assert not list((tmp_path / "fused" / "results" / "samples").rglob("*.zarr"))  # temp(): removed after use

"""The pseudo-label CLIs end to end on synthetic shards (and on real COCO images when present)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import COCO_MINI, COCO_PANOPTIC_SAMPLE, require_shared
from tests.pseudo.conftest import SHARD_SIZE, Synthetic
from u2seg.cli import main
from u2seg.coco_format import decode_mask, id2rgb, instance_annotation, rgb2id
from u2seg.errors import UserError
from u2seg.features import write_shard
from u2seg.pseudo.instances import cluster_cli
from u2seg.pseudo.panoptic import validate
from u2seg.pseudo.instances.embeddings import load_embeddings

K, S = 3, 2


def run_stages(data: Synthetic, out: Path, k: int = K, method: str = "pooled", extra_embed=()) -> Path:
    """embed every shard, cluster instances and stuff, merge, validate; returns the pseudo folder."""
    manifest = json.loads(data.manifest.read_text())
    n_shards = (len(manifest["images"]) + SHARD_SIZE - 1) // SHARD_SIZE
    for s in range(n_shards):
        assert main(["embed", "--manifest", str(data.manifest), "--shard", str(s), "--shard-size", str(SHARD_SIZE),
                     "--masks", str(data.masks / f"shard_{s:05d}.json"),
                     "--features", str(data.features / f"shard_{s:05d}.zarr"), "--method", method,
                     *extra_embed, "--out", str(out / "embed" / f"shard_{s:05d}.npz")]) == 0
    assert main(["cluster-instances", "--manifest", str(data.manifest), "--shard-size", str(SHARD_SIZE),
                 "--embed-dir", str(out / "embed"), "--masks-dir", str(data.masks), "--k", str(k),
                 "--iterations", "20", "--seed", "0", "--chunk-size", "4",
                 "--out-instances", str(out / "instances.json"), "--out-centroids", str(out / "centroids.npy"),
                 "--summary", str(out / "cluster_summary.json")]) == 0
    assert main(["cluster-stuff", "--manifest", str(data.manifest), "--shard-size", str(SHARD_SIZE),
                 "--features-dir", str(data.features), "--k", str(S), "--sample-patches", "100",
                 "--iterations", "10", "--chunk-size", "32", "--out-model", str(out / "stuff_model.npz"),
                 "--out-maps", str(out / "stuff"), "--summary", str(out / "stuff_summary.json")]) == 0
    assert main(["merge-panoptic", "--manifest", str(data.manifest), "--instances", str(out / "instances.json"),
                 "--stuff-dir", str(out / "stuff"), "--k", str(k), "--num-stuff", str(S),
                 "--max-thing-overlap", "0.7", "--gallery-size", "2",
                 "--cluster-summary", str(out / "cluster_summary.json"),
                 "--stuff-summary", str(out / "stuff_summary.json"), "--out-json", str(out / "panoptic.json"),
                 "--out-panoptic", str(out / "panoptic"), "--out-semantic", str(out / "semantic"),
                 "--gallery", str(out / "gallery"), "--summary", str(out / "summary.json")]) == 0
    assert main(["validate-panoptic", "--panoptic-json", str(out / "panoptic.json"),
                 "--panoptic-dir", str(out / "panoptic"), "--semantic-dir", str(out / "semantic"),
                 "--instances", str(out / "instances.json"), "--num-things", str(k),
                 "--report", str(out / "validation.json")]) == 0
    return out


def test_synthetic_end_to_end(synthetic: Synthetic, tmp_path: Path):
    out = run_stages(synthetic, tmp_path / "pseudo")
    inst = json.loads((out / "instances.json").read_text())
    assert [c["id"] for c in inst["categories"]] == [1, 2, 3]
    assert [(i["id"], i["width"], i["height"]) for i in inst["images"]] == \
        [(i["id"], i["width"], i["height"]) for i in synthetic.images]
    assert len(inst["annotations"]) == synthetic.n_instances == 10
    # category = nearest centroid + 1 of each embedding (rows follow the annotation order)
    centroids = np.load(out / "centroids.npy")
    emb = np.concatenate([load_embeddings(out / "embed" / f"shard_{s:05d}.npz")[0] for s in range(3)])
    nearest = ((emb[:, None] - centroids[None]) ** 2).sum(-1).argmin(1) + 1
    assert [a["category_id"] for a in inst["annotations"]] == nearest.tolist()
    assert len({a["id"] for a in inst["annotations"]}) == 10

    pan = json.loads((out / "panoptic.json").read_text())
    assert len(pan["annotations"]) == 5
    assert [c["id"] for c in pan["categories"]] == list(range(1, K + S + 1))
    stuff_only = next(a for a in pan["annotations"] if a["image_id"] == 102)  # image 2 has no masks
    assert stuff_only["segments_info"] and all(s["category_id"] > K for s in stuff_only["segments_info"])
    all_ids = [s["id"] for a in pan["annotations"] for s in a["segments_info"]]
    assert len(all_ids) == len(set(all_ids))  # globally unique
    sem = np.asarray(Image.open(out / "semantic" / "img_0.png"))
    assert sem.shape == (40, 64) and set(np.unique(sem)) <= {0, 1, 2, 255} and (sem == 0).any()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_without_instances"] == 1
    assert summary["instances"] == 10 and summary["clustering"]["k"] == K
    assert sum(summary["clustering"]["cluster_sizes"]) == 10
    assert len(list((out / "gallery").glob("*.png"))) == 2
    assert json.loads((out / "validation.json").read_text())["ok"] is True

    # deterministic for a seed: a second run gives byte-identical labels
    out2 = run_stages(synthetic, tmp_path / "again")
    assert (out2 / "instances.json").read_bytes() == (out / "instances.json").read_bytes()
    assert np.array_equal(np.load(out2 / "centroids.npy"), centroids)
    assert (out2 / "panoptic.json").read_bytes() == (out / "panoptic.json").read_bytes()


def test_fewer_instances_than_k_names_the_key(synthetic: Synthetic, tmp_path: Path):
    with pytest.raises(AssertionError):
        run_stages(synthetic, tmp_path / "p", k=11)
    parser = argparse.ArgumentParser()
    cluster_cli.add_arguments(parser)
    args = parser.parse_args(["--manifest", str(synthetic.manifest), "--shard-size", str(SHARD_SIZE),
                              "--embed-dir", str(tmp_path / "p" / "embed"), "--masks-dir", str(synthetic.masks),
                              "--k", "11", "--out-instances", str(tmp_path / "i.json"),
                              "--out-centroids", str(tmp_path / "c.npy"), "--summary", str(tmp_path / "s.json")])
    with pytest.raises(UserError, match=r"only 10 pseudo-instances for clustering\.k=11"):
        cluster_cli.run(args)
    assert not (tmp_path / "i.json").exists()


def test_swapped_mask_size_is_rejected(synthetic: Synthetic, tmp_path: Path):
    frag_path = synthetic.masks / "shard_00000.json"
    frag = json.loads(frag_path.read_text())
    mask = np.zeros((64, 40), dtype=bool)  # image 0 is 40 x 64 (h x w): a width/height swap upstream
    mask[:10, :10] = True
    frag["annotations"].append(instance_annotation(mask, 999, 100, 1))
    frag_path.write_text(json.dumps(frag))
    rc = main(["embed", "--manifest", str(synthetic.manifest), "--shard", "0", "--shard-size", str(SHARD_SIZE),
               "--masks", str(frag_path), "--features", str(synthetic.features / "shard_00000.zarr"),
               "--out", str(tmp_path / "e.npz")])
    assert rc == 1 and not (tmp_path / "e.npz").exists()


def test_crop_cls_embeddings(synthetic: Synthetic, tmp_path: Path):
    out = tmp_path / "e.npz"
    assert main(["embed", "--manifest", str(synthetic.manifest), "--shard", "1", "--shard-size", str(SHARD_SIZE),
                 "--masks", str(synthetic.masks / "shard_00001.json"),
                 "--features", str(synthetic.features / "shard_00001.zarr"), "--method", "crop_cls",
                 "--backbone", "random_vit_tiny", "--crop-size", "32", "--background", "255", "255", "255",
                 "--margin", "0.1", "--out", str(out)]) == 0
    emb, image_ids, ann_index, meta = load_embeddings(out)
    assert emb.shape == (3, 192) and np.isfinite(emb).all()  # image 2 has none, image 3 three masks
    assert image_ids.tolist() == [103, 103, 103] and ann_index.tolist() == [0, 1, 2]
    assert meta["method"] == "crop_cls" and meta["background"] == [255, 255, 255]
    assert len({tuple(r) for r in emb.round(5).tolist()}) == 3  # different crops, different embeddings


# ------------------------------------------------------------------------------------- validator
def _valid_labels(tmp_path: Path) -> tuple[dict, Path, Path]:
    from u2seg.pseudo.panoptic.merge import merge_panoptic, panoptic_categories

    png_dir, sem_dir = tmp_path / "pan", tmp_path / "sem"
    png_dir.mkdir()
    sem_dir.mkdir()
    stuff = np.zeros((12, 16), dtype=np.uint8)
    stuff[6:] = 1
    m = np.zeros((12, 16), dtype=bool)
    m[2:5, 3:9] = True
    res = merge_panoptic([m], [2], stuff, K, S, 0.7, first_id=5)
    Image.fromarray(id2rgb(res.pan)).save(png_dir / "a.png")
    Image.fromarray(res.semantic).save(sem_dir / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 16, "height": 12}],
            "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": res.segments}],
            "categories": panoptic_categories(K, S)}
    return data, png_dir, sem_dir


def test_validator_accepts_valid_and_catches_each_problem(tmp_path: Path):
    data, png_dir, sem_dir = _valid_labels(tmp_path)
    errors, stats = validate.validate_panoptic(data, png_dir, sem_dir)
    assert errors == [] and stats["segments"] == 3

    def check(mutate, pattern):
        bad = json.loads(json.dumps(data))
        mutate(bad)
        errs, _ = validate.validate_panoptic(bad, png_dir, sem_dir)
        assert any(pattern in e for e in errs), errs

    check(lambda d: d["annotations"][0]["segments_info"][0].update(area=1), "area")
    check(lambda d: d["annotations"][0]["segments_info"][0].update(bbox=[0, 0, 1, 1]), "bbox")
    check(lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99), "unknown category")
    check(lambda d: d["annotations"][0]["segments_info"].pop(), "not listed")
    check(lambda d: d["annotations"][0]["segments_info"].append(
        {"id": 77, "category_id": 1, "iscrowd": 0, "area": 0, "bbox": [0, 0, 0, 0]}), "absent from the PNG")
    check(lambda d: d["annotations"][0]["segments_info"].append(dict(d["annotations"][0]["segments_info"][0])),
          "listed twice")
    check(lambda d: d["images"].append({"id": 2, "file_name": "b.jpg", "width": 4, "height": 4}), "no panoptic")
    check(lambda d: d["images"][0].update(width=17), "PNG is 16x12")
    # semantic PNG that disagrees with the panoptic PNG
    sem = np.asarray(Image.open(sem_dir / "a.png")).copy()
    sem[0, 0] = 0
    Image.fromarray(sem).save(sem_dir / "a.png")
    errors, _ = validate.validate_panoptic(data, png_dir, sem_dir)
    assert any("semantic" in e for e in errors)
    # CLI: non-zero exit on problems
    (tmp_path / "p.json").write_text(json.dumps(data))
    assert main(["validate-panoptic", "--panoptic-json", str(tmp_path / "p.json"), "--panoptic-dir", str(png_dir),
                 "--semantic-dir", str(sem_dir)]) == 1
    assert main(["validate-panoptic", "--panoptic-json", str(tmp_path / "p.json"),
                 "--panoptic-dir", str(png_dir)]) == 0


def test_validator_accepts_official_coco_panoptic_ground_truth():
    root = require_shared(COCO_PANOPTIC_SAMPLE) / "annotations"
    data = json.loads((root / "panoptic_val2017.json").read_text())
    errors, stats = validate.validate_panoptic(data, root / "panoptic_val2017")
    assert errors == [] and stats["images"] == 2 and stats["segments"] > 10
    data["annotations"][0]["segments_info"][0]["area"] += 1
    assert validate.validate_panoptic(data, root / "panoptic_val2017")[0]


def test_instance_validator(tmp_path: Path):
    m = np.zeros((10, 20), dtype=bool)
    m[1:4, 2:9] = True
    ann = instance_annotation(m, 1, 7, 2)
    data = {"images": [{"id": 7, "file_name": "x.jpg", "width": 20, "height": 10}], "annotations": [ann],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    path = tmp_path / "i.json"
    path.write_text(json.dumps(data))
    assert validate.validate_instances(path, num_categories=2)[0] == []
    assert validate.validate_instances(path, num_categories=3)[0]  # categories must be 1..K
    data["annotations"][0]["area"] = 5
    data["images"][0]["width"] = 10
    path.write_text(json.dumps(data))
    errors, _ = validate.validate_instances(path)
    assert any("RLE size" in e for e in errors)
    path.write_text("{not json")
    assert "cannot load" in validate.validate_instances(path)[0][0]


# ------------------------------------------------------------------------------- real COCO photos
def test_real_coco_images(tmp_path: Path):
    """COCO-mini train photos (real, non-square) with GT masks standing in for MaskCut masks."""
    coco = require_shared(COCO_MINI)
    gt = json.loads((coco / "annotations" / "instances_train2017.json").read_text())
    images = sorted(gt["images"], key=lambda im: im["id"])[:3]
    root = tmp_path / "data"
    (root / "features").mkdir(parents=True)
    (root / "maskcut").mkdir()
    manifest = {"dataset": {"kind": "coco"}, "root": str(coco / "train2017"),
                "images": [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in images],
                "annotations": None}
    (root / "manifest.json").write_text(json.dumps(manifest))
    rng = np.random.default_rng(0)
    n = 0
    for s in range(0, 3, SHARD_SIZE):
        shard = manifest["images"][s:s + SHARD_SIZE]
        write_shard(root / "features" / f"shard_{s // SHARD_SIZE:05d}.zarr",
                    rng.normal(size=(len(shard), 8, 5, 5)).astype(np.float32),
                    rng.normal(size=(len(shard), 4)).astype(np.float32), np.array([im["id"] for im in shard]),
                    np.array([[im["height"], im["width"]] for im in shard]), {"backbone": "synthetic"})
        anns = []
        for im in shard:
            for a in [a for a in gt["annotations"] if a["image_id"] == im["id"] and not a["iscrowd"]][:3]:
                mask = decode_mask(a["segmentation"], im["height"], im["width"])
                anns.append(instance_annotation(mask, len(anns) + 1, im["id"], 1))
        n += len(anns)
        (root / "maskcut" / f"shard_{s // SHARD_SIZE:05d}.json").write_text(json.dumps({"images": shard, "annotations": anns}))
    data = Synthetic(root, root / "manifest.json", root / "features", root / "maskcut", manifest["images"], n)
    out = run_stages(data, tmp_path / "pseudo", k=2)
    pan = json.loads((out / "panoptic.json").read_text())
    for im, ann in zip(manifest["images"], pan["annotations"]):
        png = np.asarray(Image.open(out / "panoptic" / ann["file_name"]))
        assert png.shape[:2] == (im["height"], im["width"])
        assert set(np.unique(rgb2id(png))) - {0} == {s["id"] for s in ann["segments_info"]}
    gallery = sorted((out / "gallery").glob("*.png"))
    assert len(gallery) == 2 and np.asarray(Image.open(gallery[0])).shape[0] == 320


def test_cluster_stuff_with_crf(synthetic: Synthetic, tmp_path: Path):
    out = tmp_path / "s"
    assert main(["cluster-stuff", "--manifest", str(synthetic.manifest), "--shard-size", str(SHARD_SIZE),
                 "--features-dir", str(synthetic.features), "--k", "2", "--sample-patches", "80", "--iterations", "5",
                 "--crf", "--crf-iterations", "2", "--out-model", str(out / "m.npz"), "--out-maps", str(out / "maps"),
                 "--summary", str(out / "summary.json")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["crf"] is True and summary["sampled_patches"] == 80
    for im in synthetic.images:
        lab = np.asarray(Image.open(out / "maps" / f"{Path(im['file_name']).stem}.png"))
        assert lab.shape == (im["height"], im["width"]) and set(np.unique(lab)) <= {0, 1}
        # synthetic features: top half one material, bottom half the other -> both labels present
        assert lab[0, 0] != lab[-1, 0]

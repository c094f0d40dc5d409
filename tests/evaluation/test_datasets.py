"""COCO-format datasets (config `datasets`): the generic kind gives the coco kind's metrics; panoptic-only GT."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import COCO_MINI, COCO_PANOPTIC_SAMPLE, require_shared
from u2seg import atomic
from u2seg.coco_format import decode_mask, id2rgb, instance_annotation
from u2seg.errors import UserError
from u2seg.evaluation import dataset_gt, protocols
from u2seg.evaluation import gt as gtmod
from u2seg.ingest import build_manifest
from u2seg.manifest import image_stem

N_IMAGES = 6


def _predictions(manifest: dict, gt: dict, out: Path) -> dict:
    """Deterministic imperfect predictions from the GT: shifted masks, cluster ids that mix classes,
    a panoptic prediction (things + one stuff label on the rest) and semantic PNGs."""
    rng = np.random.default_rng(0)
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in manifest["images"]}
    dets = []
    (out / "panoptic").mkdir(parents=True)
    (out / "semantic").mkdir()
    pan_anns = []
    by_image: dict[int, list] = {i: [] for i in sizes}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            by_image[int(a["image_id"])].append(a)
    for im in manifest["images"]:
        iid = int(im["id"])
        h, w = sizes[iid]
        ids = np.full((h, w), 1000, np.int64)  # stuff segment 1000 everywhere not covered
        segs = []
        for k, a in enumerate(by_image[iid]):
            mask = np.roll(decode_mask(a["segmentation"], h, w), int(rng.integers(0, 6)), axis=1)
            if k % 4 == 3 or not mask.any():  # a few misses
                continue
            cluster = 1 + (int(a["category_id"]) * 7) % 5
            det = instance_annotation(mask, len(dets) + 1, iid, cluster, score=float(rng.uniform(0.3, 1.0)))
            dets.append(det)
            ids[mask] = len(segs) + 1
            segs.append({"id": len(segs) + 1, "category_id": cluster})
        segs.append({"id": 1000, "category_id": 6})
        present = set(np.unique(ids).tolist())
        segs = [sg for sg in segs if sg["id"] in present]  # instances painted over entirely are gone
        atomic.save_png(out / "panoptic" / f"{image_stem(im)}.png", id2rgb(ids))
        atomic.save_png(out / "semantic" / f"{image_stem(im)}.png", np.where(ids == 1000, 1, 0).astype(np.uint8))
        pan_anns.append({"image_id": iid, "file_name": f"{image_stem(im)}.png", "segments_info": segs})
    cats = [{"id": c, "name": f"c{c}", "isthing": 1} for c in range(1, 6)] + [{"id": 6, "name": "s1", "isthing": 0}]
    atomic.write_json(out / "panoptic.json", {"annotations": pan_anns, "categories": cats})
    return {"images": manifest["images"], "annotations": dets, "categories": cats[:5]}


def _evaluate(manifest: dict, dets: dict, pred: Path, **kw) -> dict:
    return protocols.evaluate(manifest, "ds", "m", instances_data=copy.deepcopy(dets),
                              panoptic_json=pred / "panoptic.json", panoptic_dir=pred / "panoptic",
                              semantic_dir=pred / "semantic", num_stuff=1, **kw)


def _numbers(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("instance", "panoptic", "semantic")}


def test_coco_mini_relaid_as_generic_png_dataset_gives_the_coco_metrics(tmp_path):
    coco = require_shared(COCO_MINI)
    ref, skipped = build_manifest("coco", coco, split="val", limit=N_IMAGES)
    assert not skipped and len(ref["images"]) == N_IMAGES
    # the same images as PNGs in a sub-folder elsewhere, the same annotations in a json elsewhere
    data = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    keep = {int(im["id"]) for im in ref["images"]}
    images = []
    for im in data["images"]:
        if int(im["id"]) in keep:
            rel = f"photos/{Path(im['file_name']).stem}.png"
            (tmp_path / "imgs" / "photos").mkdir(parents=True, exist_ok=True)
            Image.open(coco / "val2017" / im["file_name"]).save(tmp_path / "imgs" / rel)
            images.append(dict(im, file_name=rel))
    relaid = {"images": images, "annotations": [a for a in data["annotations"] if int(a["image_id"]) in keep],
              "categories": data["categories"]}
    atomic.write_json(tmp_path / "gt" / "mine.json", relaid)
    man, skipped = build_manifest("coco-format", tmp_path / "imgs", instances=tmp_path / "gt" / "mine.json",
                                  name="mini")
    assert not skipped and man["dataset"]["kind"] == "coco-format" and man["dataset"]["name"] == "mini"
    assert [im["id"] for im in man["images"]] == [im["id"] for im in ref["images"]]
    assert all(im["file_name"].endswith(".png") for im in man["images"])

    gt = gtmod.load_instances(ref["annotations"], sorted(keep))
    dets = _predictions(ref, gt, tmp_path / "pred")
    want = _evaluate(ref, dets, tmp_path / "pred")
    got = _evaluate(man, dets, tmp_path / "pred")
    assert _numbers(got) == _numbers(want)
    # and the numbers are real (imperfect predictions, crowd GT present in coco-mini)
    ca = want["instance"]["class_agnostic"]
    assert 0 < ca["bbox"]["AP"] < 100 and 0 < ca["segm"]["AR100"] < 100
    assert 0 < want["panoptic"]["u2seg"]["things"]["pq"] < 100
    assert want["instance"]["majority"]["mapping"]


def test_panoptic_sample_as_a_panoptic_only_dataset(tmp_path):
    sample = require_shared(COCO_PANOPTIC_SAMPLE)
    pan_json = sample / "annotations" / "panoptic_val2017.json"
    man, skipped = build_manifest("coco-format", sample / "val2017", panoptic_json=pan_json,
                                  panoptic_dir=sample / "annotations" / "panoptic_val2017", name="pansample")
    assert not skipped and len(man["images"]) == 2 and man["annotations"] is None
    data = json.loads(pan_json.read_text())
    ids = [int(im["id"]) for im in man["images"]]
    gt, source = dataset_gt.manifest_instances(man, ids)
    assert "thing segments" in source and len(gt["categories"]) == 80
    thing_ids = {c["id"] for c in data["categories"] if c["isthing"]}
    segs = [(a["image_id"], s) for a in data["annotations"] for s in a["segments_info"] if s["category_id"] in thing_ids]
    assert len(gt["annotations"]) == len(segs)
    assert [a["iscrowd"] for a in gt["annotations"]] == [s["iscrowd"] for _, s in segs]
    assert [a["area"] for a in gt["annotations"]] == [s["area"] for _, s in segs]  # the json's own areas
    # the GT itself as the prediction (clusters = GT categories): 100 everywhere it is exact
    pred = tmp_path / "pred"
    (pred / "panoptic").mkdir(parents=True)
    anns = []
    for a in data["annotations"]:
        src = sample / "annotations" / "panoptic_val2017" / a["file_name"]
        (pred / "panoptic" / a["file_name"]).write_bytes(src.read_bytes())
        anns.append({k: a[k] for k in ("image_id", "file_name", "segments_info")})
    atomic.write_json(pred / "panoptic.json", {"annotations": anns, "categories": data["categories"]})
    dets = [dict(a, score=1.0) for a in gt["annotations"] if not a["iscrowd"]]
    m = protocols.evaluate(man, "pansample", "gt", instances_data=dets, panoptic_json=pred / "panoptic.json",
                           panoptic_dir=pred / "panoptic", num_stuff=53)
    assert m["instance"]["class_agnostic"]["segm"]["AP"] == pytest.approx(100.0)
    assert m["instance"]["majority"]["segm"]["AP"] == pytest.approx(100.0)
    pq = m["panoptic"]["u2seg"]
    assert m["panoptic"]["categories"] == {"things": 80, "stuff": 15} and pq["things"]["pq"] == pytest.approx(100.0)
    assert m["ground_truth"]["panoptic"]["kind"] == "COCO panoptic GT"


def test_generic_categories_skip_the_coco_protocols_and_errors(tmp_path):
    (tmp_path / "imgs").mkdir()
    atomic.save_png(tmp_path / "imgs" / "a.png", np.zeros((20, 30, 3), np.uint8))
    mask = np.zeros((20, 30), bool)
    mask[2:10, 3:12] = True
    inst = {"images": [{"id": 5, "file_name": "a.png", "width": 30, "height": 20}],
            "annotations": [instance_annotation(mask, 1, 5, 3)],
            "categories": [{"id": 3, "name": "boat", "supercategory": "vessel"}]}
    atomic.write_json(tmp_path / "i.json", inst)
    man, _ = build_manifest("coco-format", tmp_path / "imgs", instances=tmp_path / "i.json", name="boats")
    pred = tmp_path / "pred"
    (pred / "panoptic").mkdir(parents=True)
    atomic.save_png(pred / "panoptic" / "a.png", id2rgb(mask.astype(np.int64)))
    atomic.write_json(pred / "panoptic.json", {"annotations": [{"image_id": 5, "file_name": "a.png",
                                                                 "segments_info": [{"id": 1, "category_id": 1}]}],
                                                "categories": [{"id": 1, "name": "c1", "isthing": 1}]})
    dets = [dict(instance_annotation(mask, 1, 5, 1), score=0.9)]
    m = protocols.evaluate(man, "boats", "m", instances_data=dets, panoptic_json=pred / "panoptic.json",
                           panoptic_dir=pred / "panoptic")
    assert m["instance"]["majority"]["bbox"]["AP"] == pytest.approx(100.0)
    assert "panoptic" not in m and "semantic" not in m and "not COCO's" in m["notes"][0]
    with pytest.raises(UserError, match="unknown evaluation protocol"):
        protocols.evaluate(man, "boats", "m", instances_data=dets, panoptic_json=pred / "panoptic.json",
                           panoptic_dir=pred / "panoptic", extra_protocols=["nope"])
    with pytest.raises(UserError, match="and/or `panoptic`"):
        build_manifest("coco-format", tmp_path / "imgs", name="x")
    with pytest.raises(UserError, match="both `panoptic`"):
        build_manifest("coco-format", tmp_path / "imgs", panoptic_json=tmp_path / "i.json", name="x")
    with pytest.raises(UserError, match="no ground truth"):
        dataset_gt.manifest_instances({"annotations": None, "panoptic": None}, [5])

"""``u2seg evaluate`` end to end on coco-mini (things-only GT) and the panoptic sample (stuff GT)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import COCO_MINI, COCO_PANOPTIC_SAMPLE, require_shared
from u2seg import atomic
from u2seg.cli import main
from u2seg.coco_format import encode_mask, id2rgb, instance_annotation
from u2seg.evaluation import gt as gtmod
from u2seg.manifest import image_stem

N_STUFF = 27


def _manifest(tmp_path, images, annotations, panoptic=None):
    man = {"dataset": {"kind": "coco", "split": "val"}, "root": "/nonexistent",
           "images": [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in images],
           "annotations": str(annotations) if annotations else None, "panoptic": panoptic}
    path = tmp_path / "manifest.json"
    atomic.write_json(path, man)
    return path


def _write_predictions(folder, images, panoptic_by_image, num_things):
    """Predictions folder from per-image (ids, segments with GT categories) where thing clusters
    are the GT category ids and stuff categories become stuff clusters in order of appearance."""
    stuff_cluster: dict[int, int] = {}
    dets, anns = [], []
    (folder / "panoptic").mkdir(parents=True)
    (folder / "semantic").mkdir()
    for im in images:
        ids, segs = panoptic_by_image[im["id"]]
        sem = np.full(ids.shape, 255, np.uint8)
        out_segs = []
        for s in segs:
            if s.get("isthing", True):
                cat = s["category_id"]
                sem[ids == s["id"]] = 0
                dets.append(instance_annotation(ids == s["id"], len(dets) + 1, im["id"], cat, score=1.0))
            else:
                c = stuff_cluster.setdefault(s["category_id"], len(stuff_cluster) + 1)
                cat = num_things + c
                sem[ids == s["id"]] = c
            out_segs.append({"id": s["id"], "category_id": cat, "iscrowd": 0})
        atomic.save_png(folder / "panoptic" / f"{image_stem(im)}.png", id2rgb(ids))
        atomic.save_png(folder / "semantic" / f"{image_stem(im)}.png", sem)
        anns.append({"image_id": im["id"], "file_name": f"{image_stem(im)}.png", "segments_info": out_segs})
    cats = [{"id": i, "name": f"t{i}", "isthing": 1} for i in range(1, num_things + 1)]
    cats += [{"id": num_things + c, "name": f"s{c}", "isthing": 0} for c in range(1, N_STUFF + 1)]
    atomic.write_json(folder / "panoptic.json", {"annotations": anns, "categories": cats})
    atomic.write_json(folder / "instances_results.json", dets)


def _run(manifest, out, *extra):
    return main(["evaluate", "--manifest", str(manifest), "--out-json", str(out / "metrics.json"),
                 "--out-md", str(out / "metrics.md"), "--dataset", "coco-val", "--model", "m", *extra])


def test_coco_mini_ground_truth_as_predictions(tmp_path):
    ann_path = require_shared(COCO_MINI) / "annotations" / "instances_val2017.json"
    data = json.loads(ann_path.read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:8]
    gt = gtmod.load_instances(ann_path, [im["id"] for im in images])
    pgt = gtmod.things_only_panoptic(gt)
    pans = {}
    for im in images:
        ids, segs = gtmod.panoptic_image(pgt.sources[im["id"]])
        for s in [s for s in segs if s["iscrowd"]]:  # the prediction has no crowd: paint it VOID
            ids[ids == s["id"]] = 0
        segs = [s for s in segs if not s["iscrowd"]]
        free = ids == 0  # a stuff prediction on unlabelled (VOID) pixels is never scored
        if free.any():
            ids[free] = 10_000
            segs.append({"id": 10_000, "category_id": 5000, "isthing": False})
        pans[im["id"]] = (ids, segs)
    _write_predictions(tmp_path / "pred", images, pans, num_things=90)
    # instance predictions: the full (unoccluded) GT masks, cluster = GT category id
    sizes = {im["id"]: (im["height"], im["width"]) for im in images}
    dets = [instance_annotation(gtmod.decode_mask(a["segmentation"], *sizes[a["image_id"]]), a["id"], a["image_id"],
                                a["category_id"], score=1.0) for a in gt["annotations"] if not a["iscrowd"]]
    for d, a in zip(dets, [a for a in gt["annotations"] if not a["iscrowd"]]):
        d["bbox"] = a["bbox"]  # the polygon's box (the mask's pixel box differs by < 1 px)
    atomic.write_json(tmp_path / "pred" / "instances_results.json", dets)
    assert _run(_manifest(tmp_path, images, ann_path), tmp_path, "--predictions", str(tmp_path / "pred"),
                "--workers", "2") == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert "things-only" in m["ground_truth"]["panoptic"]["kind"]
    for proto in ("class_agnostic", "majority", "hungarian"):
        assert m["instance"][proto]["bbox"]["AP"] == pytest.approx(100)
        assert m["instance"][proto]["segm"]["AP"] == pytest.approx(100)
    mapping = m["instance"]["majority"]["mapping"]
    assert all(int(k) == v["class_id"] for k, v in mapping.items()) and len(mapping) > 3
    for proto in ("u2seg", "hungarian"):
        pq = m["panoptic"][proto]
        assert pq["all"]["pq"] == pytest.approx(100) and pq["stuff"]["n"] == 0 and pq["things"]["n"] > 3
    assert "skipped" in m["semantic"]["u2seg16"]  # no stuff GT
    assert m["semantic"]["stego27"]["pixel_acc"] > 0
    md = (tmp_path / "metrics.md").read_text()
    assert "| class_agnostic | box | 100.0" in md and "things-only GT" in md
    # metrics.md says which semantic number is STEGO's and which rule PQ used for crowd segments
    assert "| stego27 |" in md and "| stego27_strict |" in md and "STEGO's UnsupervisedMetrics" in md
    assert "crowd segments of one category in an image: last: panopticapi" in md


def test_panoptic_sample_with_stuff(tmp_path):
    root = require_shared(COCO_PANOPTIC_SAMPLE) / "annotations"
    data = json.loads((root / "panoptic_val2017.json").read_text())
    images = data["images"]
    pgt = gtmod.load_panoptic(root / "panoptic_val2017.json", root / "panoptic_val2017", [im["id"] for im in images])
    isthing = {c.id: c.isthing for c in pgt.categories}
    # instance GT derived from the panoptic GT's thing segments
    anns, pans = [], {}
    for im in images:
        ids, segs = gtmod.panoptic_image(pgt.sources[im["id"]])
        for s in segs:
            if isthing[s["category_id"]]:
                a = instance_annotation(ids == s["id"], len(anns) + 1, im["id"], s["category_id"])
                a["iscrowd"] = s["iscrowd"]
                anns.append(a)
        keep = [dict(s, isthing=isthing[s["category_id"]]) for s in segs if not s["iscrowd"]]
        for s in segs:
            if s["iscrowd"]:
                ids[ids == s["id"]] = 0
        pans[im["id"]] = (ids, keep)
    inst_path = tmp_path / "instances.json"
    atomic.write_json(inst_path, {"images": images, "annotations": anns,
                                  "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory}
                                                 for c in pgt.categories if c.isthing]})
    _write_predictions(tmp_path / "pred", images, pans, num_things=200)
    manifest = _manifest(tmp_path, images, inst_path,
                         {"json": str(root / "panoptic_val2017.json"), "png_dir": str(root / "panoptic_val2017")})
    assert _run(manifest, tmp_path, "--predictions", str(tmp_path / "pred")) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["ground_truth"]["panoptic"]["kind"] == "COCO panoptic GT"
    pq = m["panoptic"]["u2seg"]
    assert pq["all"]["pq"] == pytest.approx(100) and pq["stuff"]["n"] > 0
    assert m["panoptic"]["categories"] == {"things": 80, "stuff": 15}
    assert m["semantic"]["u2seg16"]["pixel_acc"] == pytest.approx(100)
    assert m["semantic"]["u2seg16"]["miou"] == pytest.approx(100)
    # STEGO-27 is one-to-one: label 0 (all things) can only match one thing super-category
    assert m["semantic"]["stego27"]["mapping"]["thing"] == "person"
    assert m["semantic"]["stego27"]["pixel_acc"] < 100


def test_maskcut_class_agnostic_only_and_errors(tmp_path, capsys):
    ann_path = require_shared(COCO_MINI) / "annotations" / "instances_val2017.json"
    data = json.loads(ann_path.read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:5]
    masks = {"images": images, "categories": [{"id": 1, "name": "fg"}], "annotations": []}
    for im in images:
        m = np.zeros((im["height"], im["width"]), bool)
        m[: im["height"] // 2] = True
        masks["annotations"].append({"id": im["id"], "image_id": im["id"], "category_id": 1, "iscrowd": 0,
                                     "segmentation": encode_mask(m), "bbox": [0, 0, im["width"], im["height"] // 2]})
    atomic.write_json(tmp_path / "masks.json", masks)
    manifest = _manifest(tmp_path, images, ann_path)
    assert _run(manifest, tmp_path, "--instances", str(tmp_path / "masks.json"), "--class-agnostic-only") == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["instance"]) == {"detections", "scores", "class_agnostic"} and "rank" in m["instance"]["scores"]
    assert 0 <= m["instance"]["class_agnostic"]["segm"]["AR100"] < 100
    # no ground truth -> clear error, exit code 1
    assert _run(_manifest(tmp_path, images, None), tmp_path, "--instances", str(tmp_path / "masks.json")) == 1
    # wrong mask size -> clear error
    masks["annotations"][0]["segmentation"] = encode_mask(np.zeros((3, 3), bool))
    atomic.write_json(tmp_path / "masks.json", masks)
    assert _run(manifest, tmp_path, "--instances", str(tmp_path / "masks.json")) == 1

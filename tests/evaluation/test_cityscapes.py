"""Cityscapes protocols on a synthetic Cityscapes-like panoptic set, against hand-computed values.

One 16 x 32 image. GT: sky (rows 0-7, 256 px), and in rows 8-15 a car (cols 0-7, 64 px), road
(cols 8-23, 128 px), parking (cols 24-31, 64 px; a 27-class label, VOID in the 19 classes).
Prediction: thing cluster 1 = the car; stuff labels 101 = sky cols 12-31 (160 px), 103 = sky
cols 0-11 (96 px), 102 = road + parking (192 px).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from u2seg import atomic
from u2seg.coco_format import id2rgb, instance_annotation
from u2seg.evaluation import cityscapes, protocols
from u2seg.ingest import build_manifest

H, W = 16, 32


def _dataset(tmp_path):
    gt = np.zeros((H, W), np.int64)
    gt[:8] = 1          # sky
    gt[8:, :8] = 2      # car
    gt[8:, 8:24] = 3    # road
    gt[8:, 24:] = 4     # parking
    (tmp_path / "gt").mkdir()
    atomic.save_png(tmp_path / "gt" / "f_000001_000001_gtFine_panoptic.png", id2rgb(gt))
    atomic.save_png(tmp_path / "imgs" / "f" / "f_000001_000001_leftImg8bit.png", np.zeros((H, W, 3), np.uint8))
    segs = [{"id": 1, "category_id": 23}, {"id": 2, "category_id": 26}, {"id": 3, "category_id": 7},
            {"id": 4, "category_id": 9}]
    for s in segs:
        s.update(area=int((gt == s["id"]).sum()), iscrowd=0)
    cats = [{"id": i, "name": n, "supercategory": c, "isthing": int(t)} for i, n, _, c, t in cityscapes.LABELS_27]
    atomic.write_json(tmp_path / "gt.json", {
        "images": [{"id": 1, "file_name": "f/f_000001_000001_leftImg8bit.png", "width": W, "height": H}],
        "annotations": [{"image_id": 1, "file_name": "f_000001_000001_gtFine_panoptic.png", "segments_info": segs}],
        "categories": cats})
    man, skipped = build_manifest("coco-format", tmp_path / "imgs", panoptic_json=tmp_path / "gt.json",
                                  panoptic_dir=tmp_path / "gt", name="cs")
    assert not skipped
    pred = np.zeros((H, W), np.int64)
    pred[:8, 12:] = 2   # label 101
    pred[:8, :12] = 4   # label 103
    pred[8:, :8] = 1    # car cluster 1
    pred[8:, 8:] = 3    # label 102
    (tmp_path / "pred").mkdir()
    atomic.save_png(tmp_path / "pred" / "p.png", id2rgb(pred))
    atomic.write_json(tmp_path / "pred.json", {
        "annotations": [{"image_id": 1, "file_name": "p.png", "segments_info": [
            {"id": 1, "category_id": 1}, {"id": 2, "category_id": 101}, {"id": 3, "category_id": 102},
            {"id": 4, "category_id": 103}]}],
        "categories": [{"id": 1, "isthing": 1}, {"id": 101, "isthing": 0}, {"id": 102, "isthing": 0},
                       {"id": 103, "isthing": 0}]})
    dets = [dict(instance_annotation(pred == 1, 1, 1, 1), score=0.9)]
    return man, dets


def test_cityscapes_protocols_hand_computed(tmp_path):
    man, dets = _dataset(tmp_path)
    m = protocols.evaluate(man, "cs", "m", instances_data=dets, panoptic_json=tmp_path / "pred.json",
                           panoptic_dir=tmp_path / "pred", extra_protocols=list(cityscapes.PROTOCOLS))
    assert m["instance"]["majority"]["mapping"]["1"]["class"] == "car"
    assert "panoptic" not in m  # not COCO classes: the COCO protocols are skipped
    p = m["protocols"]
    approx = pytest.approx

    # CUPS's metric, 27 classes: 101 -> sky, 102 -> road, 1 -> car; 103 (no overlap left) also gets a class,
    # one without GT pixels, where its segment is a false positive (PQ 0, counted); parking missed.
    c27 = p["cityscapes/cups27"]
    extra = c27["mapping"].pop("103")
    assert c27["mapping"] == {"1": "car", "101": "sky", "102": "road"}
    assert extra not in ("sky", "road", "car", "parking")
    # PQ: sky 160/256, road 128/192 (parking pixels of 102 are not VOID here), parking 0, car 1, extra 0
    assert c27["panoptic"]["all"]["pq"] == approx(100 * (0.625 + 2 / 3 + 0 + 1 + 0) / 5)
    assert c27["panoptic"]["things"]["pq"] == approx(100.0)
    assert c27["panoptic"]["stuff"]["pq"] == approx(100 * (0.625 + 2 / 3) / 4)
    # mIoU (joint matching): sky 160/256, road 128/192, parking 0, car 1 and 0 for 103's class unless it is parking
    n27 = 4 if c27["semantic_mapping"]["103"] == "parking" else 5
    assert c27["semantic"]["miou"] == approx(100 * (0.625 + 2 / 3 + 0 + 1) / n27)
    assert c27["semantic"]["pixel_acc"] == approx(100 * 352 / 512)

    # CUPS 19: parking is VOID, so 102 fits road exactly (its parking pixels lie on VOID); 103's class scores 0
    c19 = p["cityscapes/cups19"]
    assert c19["mapping"]["103"] not in ("sky", "road", "car")
    assert c19["panoptic"]["all"]["pq"] == approx(100 * (0.625 + 1 + 1 + 0) / 4)
    assert c19["semantic"]["miou"] == approx(100 * (0.625 + 1 + 1 + 0) / 4)
    assert c19["semantic"]["pixel_acc"] == approx(100 * 352 / 448)

    # stricter variants: 103 unmatched (VOID), classes without TP + FP + FN left out
    s27 = p["cityscapes/cups27_strict"]
    assert s27["mapping"] == {"1": "car", "101": "sky", "102": "road"}
    assert s27["panoptic"]["all"]["pq"] == approx(100 * (0.625 + 2 / 3 + 0 + 1) / 4)
    assert s27["panoptic"]["things"]["pq"] == approx(100.0)
    assert s27["panoptic"]["stuff"]["pq"] == approx(100 * (0.625 + 2 / 3) / 3)
    # mIoU: sky 160/256, road 128/192, parking 0, car 1; PixelAcc = (160 + 128 + 64) / 512
    assert s27["semantic"]["miou"] == approx(100 * (0.625 + 2 / 3 + 0 + 1) / 4)
    assert s27["semantic"]["pixel_acc"] == approx(100 * 352 / 512)
    s19 = p["cityscapes/cups19_strict"]
    assert s19["panoptic"]["all"]["pq"] == approx(100 * (0.625 + 1 + 1) / 3)
    assert s19["semantic"]["miou"] == approx(100 * (0.625 + 1 + 1) / 3)
    assert s19["semantic"]["pixel_acc"] == approx(100 * 352 / 448)

    # U2Seg: 103 also votes sky (IoU 96/256 > 0.15) -> a second sky segment, a false positive:
    # PQ_sky = 0.625 / (1 + 0.5); road 1; car 1 (majority mapping).
    u = p["cityscapes/u2seg"]
    assert u["mapping"] == {"1": "car", "101": "sky", "102": "road", "103": "sky"}
    assert u["panoptic"]["all"]["pq"] == approx(100 * (0.625 / 1.5 + 1 + 1) / 3)
    assert u["panoptic"]["stuff"]["pq"] == approx(100 * (0.625 / 1.5 + 1) / 2)
    assert u["panoptic"]["things"]["n"] == 1 and u["panoptic"]["stuff"]["n"] == 2
    from u2seg.evaluation.tables import markdown

    md = markdown(m)
    assert "| cityscapes/cups19_strict | 87.5 | 100.0 | 81.2 | 78.6 | 87.5 |" in md
    assert "| cityscapes/cups19 | 65.6 | 100.0 | 54.2 | 78.6 | 65.6 |" in md


def test_class_sets_and_bad_categories():
    c19, c27 = cityscapes.class_set(19), cityscapes.class_set(27)
    assert (len(c19), sum(c.isthing for c in c19)) == (19, 8)
    assert (len(c27), sum(c.isthing for c in c27)) == (27, 10)
    from u2seg.errors import UserError
    from u2seg.evaluation.gt import Category

    with pytest.raises(UserError, match="Cityscapes labels"):
        cityscapes.gt_class_map([Category(1, "boat", True, "vessel")], c19)


def test_gtfine_conversion_and_cityscapesscripts_relayout(tmp_path):
    from PIL import Image

    from u2seg.cityscapes_panoptic import from_gtfine, relay

    values = np.zeros((8, 10), np.int32)   # 0: unlabeled (VOID); saved as 16-bit PNG as Cityscapes
    values[:4] = 23                        # sky
    values[4:, :3] = 26 * 1000 + 1         # car instance 1
    values[4:, 3:6] = 26                   # car pixels without instance id: crowd
    values[4:, 6:8] = 9                    # parking (a 27-class label)
    values[4:, 8:] = 3                     # out of roi (label 3): VOID
    (tmp_path / "gtFine" / "val" / "ulm").mkdir(parents=True)
    Image.fromarray(values.astype(np.uint16)).save(tmp_path / "gtFine" / "val" / "ulm" / "ulm_000001_000002_gtFine_instanceIds.png")
    data = from_gtfine(tmp_path / "gtFine" / "val", tmp_path / "pan")
    assert len(data["categories"]) == 27
    assert data["images"] == [{"id": 1, "file_name": "ulm/ulm_000001_000002_leftImg8bit.png", "height": 8, "width": 10}]
    segs = {s["id"]: s for s in data["annotations"][0]["segments_info"]}
    assert set(segs) == {23, 26001, 26, 9}
    assert (segs[26001]["iscrowd"], segs[26]["iscrowd"], segs[9]["iscrowd"]) == (0, 1, 0)
    assert segs[23]["area"] == 40 and segs[26001]["bbox"] == [0, 4, 3, 4]
    from u2seg.evaluation.gt import read_panoptic_png

    ids = read_panoptic_png(tmp_path / "pan" / "ulm_000001_000002_gtFine_panoptic.png")
    assert (ids[4:, 8:] == 0).all() and (ids[:4] == 23).all()
    cs = {"images": [{"id": "ulm_000001_000002", "file_name": "ulm_000001_000002_leftImg8bit.png"},
                     {"id": "aachen_000000_000019", "file_name": "aachen_000000_000019_leftImg8bit.png"}],
          "annotations": [{"image_id": "ulm_000001_000002", "segments_info": []},
                          {"image_id": "aachen_000000_000019", "segments_info": []}], "categories": []}
    out = relay(cs)
    assert [(im["id"], im["file_name"]) for im in out["images"]] == [
        (1, "aachen/aachen_000000_000019_leftImg8bit.png"), (2, "ulm/ulm_000001_000002_leftImg8bit.png")]
    assert [a["image_id"] for a in out["annotations"]] == [2, 1]


# Recorded output of cityscapesScripts 2.3.0 (PyPI ``cityscapesscripts==2.3.0``, installed outside the
# project with ``pip install --target /tmp/cstool cityscapesscripts==2.3.0 pyquaternion``): the gtFine
# tree written by ``_cityscapesscripts_gtfine`` below, then
# ``PYTHONPATH=/tmp/cstool python -c "from cityscapesscripts.preparation.createPanopticImgs import main; main()"
# --dataset-folder <tmp>/gtFine --output-folder <out> --set-names val`` (the ``csCreatePanopticImgs``
# entry point); its json and panoptic PNGs copied unchanged into tests/evaluation/data/cityscapesscripts.
CS_SCRIPTS_OUTPUT = Path(__file__).parent / "data" / "cityscapesscripts"
CS_FRAMES = [("frankfurt", "000000_000294", 0), ("lindau", "000001_000019", 1)]


def _cityscapesscripts_gtfine(root: Path) -> None:
    """The synthetic gtFine/val tree the recorded cityscapesScripts output was made from (12 x 16)."""
    from PIL import Image

    for city, frame, seed in CS_FRAMES:
        v = np.full((12, 16), 7, np.uint16)   # road
        v[:4] = 23                            # sky
        v[4:6, :5] = 11                       # building
        v[6:10, 2:6] = 26000 + seed           # car instance
        v[6:10, 9:12] = 26002                 # car instance
        v[10:, 12:] = 24                      # person crowd (label id, no instance)
        v[0, :3] = 0                          # unlabeled
        v[11, :2] = 4                         # static (ignoreInEval)
        d = root / "gtFine" / "val" / city
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(v).save(d / f"{city}_{frame}_gtFine_instanceIds.png")


def test_cityscapesscripts_output_relaid_and_ingested(tmp_path):
    from u2seg.cityscapes_panoptic import from_gtfine
    from u2seg.cli import main as cli_main
    from u2seg.jsonio import load_json

    raw = load_json(CS_SCRIPTS_OUTPUT / "cityscapes_panoptic_val.json")
    # the tool's own image names, which name no file
    assert raw["images"][0]["file_name"] == "frankfurt_000000_000294_gtFine_leftImg8bit.png"
    for city, frame, _ in CS_FRAMES:  # the real leftImg8bit layout
        atomic.save_png(tmp_path / "leftImg8bit" / "val" / city / f"{city}_{frame}_leftImg8bit.png",
                        np.zeros((12, 16, 3), np.uint8))
    assert cli_main(["cityscapes-panoptic", "--from-cityscapesscripts",
                     str(CS_SCRIPTS_OUTPUT / "cityscapes_panoptic_val.json"),
                     "--out-json", str(tmp_path / "gt.json")]) == 0
    gt = load_json(tmp_path / "gt.json")
    assert [(im["id"], im["file_name"]) for im in gt["images"]] == [
        (1, "frankfurt/frankfurt_000000_000294_leftImg8bit.png"), (2, "lindau/lindau_000001_000019_leftImg8bit.png")]
    assert all((tmp_path / "leftImg8bit" / "val" / im["file_name"]).is_file() for im in gt["images"])
    man, skipped = build_manifest("coco-format", tmp_path / "leftImg8bit" / "val", panoptic_json=tmp_path / "gt.json",
                                  panoptic_dir=CS_SCRIPTS_OUTPUT / "cityscapes_panoptic_val", name="cs")
    assert not skipped and len(man["images"]) == 2
    # the project's own gtFine converter gives the tool's segments on the 19 classes the tool keeps
    _cityscapesscripts_gtfine(tmp_path)
    ours = from_gtfine(tmp_path / "gtFine" / "val", tmp_path / "pan")
    kept = {c["id"] for c in raw["categories"]}
    for mine, theirs in zip(ours["annotations"], raw["annotations"]):
        assert sorted((s["id"], s["category_id"], s["area"], s["bbox"], s["iscrowd"])
                      for s in mine["segments_info"] if s["category_id"] in kept) == sorted(
            (s["id"], s["category_id"], s["area"], s["bbox"], s["iscrowd"]) for s in theirs["segments_info"])

"""`u2seg report` items on synthetic data: predictions next to ground truth, the evaluation page made
from a real `u2seg evaluate` metrics.md, the ingest/features summary with skipped files."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from u2seg import atomic
from u2seg.cli import main
from u2seg.coco_format import encode_mask, id2rgb, mask_bbox
from u2seg.features import write_shard
from u2seg.gallery import palette
from u2seg.report import markdown_to_html, seeded_sample

H, W = 48, 64


def _dataset(tmp_path, n=3):
    """n images with a square (category 1, person) and, on odd ids, a disc (2, bicycle); GT json + manifest."""
    root = tmp_path / "images"
    root.mkdir()
    yy, xx = np.mgrid[:H, :W]
    images, anns, masks = [], [], {}
    for i in range(1, n + 1):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[..., 0] = 40 + 10 * i
        rgb[..., 1] = (xx * 3).astype(np.uint8)
        square = (yy >= 8) & (yy < 28) & (xx >= 6 + i) & (xx < 26 + i)
        rgb[square] = (200, 200, 60)
        ms = [(1, square)]
        if i % 2:
            disc = (yy - 30) ** 2 + (xx - 46) ** 2 < 100
            rgb[disc] = (30, 30, 220)
            ms.append((2, disc))
        Image.fromarray(rgb).save(root / f"img{i}.png")
        images.append({"id": i, "file_name": f"img{i}.png", "width": W, "height": H})
        masks[i] = ms
        for cat, m in ms:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": encode_mask(m),
                         "area": int(m.sum()), "bbox": mask_bbox(m), "iscrowd": 0})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                          {"id": 2, "name": "bicycle", "supercategory": "vehicle"}]}
    atomic.write_json(tmp_path / "gt.json", gt)
    manifest = {"dataset": {"kind": "coco", "split": "val"}, "root": str(root), "images": images,
                "annotations": str(tmp_path / "gt.json")}
    atomic.write_json(tmp_path / "manifest.json", manifest)
    return manifest, masks


def _predictions(tmp_path, manifest, masks, k=2, num_stuff=2):
    """Perfect predictions: the GT masks, cluster = the other category id (clusters are unnamed)."""
    pred = tmp_path / "pred"
    (pred / "panoptic").mkdir(parents=True)
    (pred / "semantic").mkdir()
    dets, anns = [], []
    for im in manifest["images"]:
        ids = np.zeros((H, W), np.int32)
        sem = np.full((H, W), 255, np.uint8)
        segs = []
        for j, (cat, m) in enumerate(masks[im["id"]]):
            cluster = 3 - cat
            dets.append({"image_id": im["id"], "category_id": cluster, "segmentation": encode_mask(m),
                         "bbox": mask_bbox(m), "score": 0.9})
            ids[m] = j + 1
            sem[m] = 0
            segs.append({"id": j + 1, "category_id": cluster, "iscrowd": 0, "isthing": 1})
        rest = ids == 0
        ids[rest] = 99
        sem[rest] = 1
        segs.append({"id": 99, "category_id": k + 1, "iscrowd": 0, "isthing": 0})
        stem = im["file_name"].rsplit(".", 1)[0]
        atomic.save_png(pred / "panoptic" / f"{stem}.png", id2rgb(ids))
        atomic.save_png(pred / "semantic" / f"{stem}.png", sem)
        anns.append({"image_id": im["id"], "file_name": f"{stem}.png", "segments_info": segs})
    cats = [{"id": c, "name": f"cluster_{c - 1}", "isthing": 1} for c in range(1, k + 1)]
    cats += [{"id": k + s, "name": f"stuff_{s}", "isthing": 0} for s in range(1, num_stuff + 1)]
    atomic.write_json(pred / "panoptic.json", {"images": manifest["images"], "annotations": anns,
                                                "categories": cats})
    atomic.write_json(pred / "instances_results.json", dets)
    atomic.write_json(pred / "summary.json", {"images": len(manifest["images"]), "detections": len(dets)})
    return pred


def test_predictions_next_to_ground_truth(tmp_path):
    manifest, masks = _dataset(tmp_path)
    pred = _predictions(tmp_path, manifest, masks)
    out = tmp_path / "report"
    assert main(["report", "predictions", "--title", "t", "--manifest", str(tmp_path / "manifest.json"),
                 "--predictions", str(pred), "--gallery-size", "2", "--seed", "0", "--score-thresh", "0.5",
                 "--out-gallery", str(out / "gallery"), "--out-html", str(out / "summary.html")]) == 0
    sample = seeded_sample([1, 2, 3], 2, 0)
    assert len(sample) == 2 and sample == seeded_sample([3, 2, 1], 2, 0)  # order-independent
    assert sorted(p.name for p in (out / "gallery").glob("*.jpg")) == [f"img{i}.jpg" for i in sample]
    panel_w = round(W * 320 / H)
    for i in sample:
        full = np.asarray(Image.open(out / "gallery" / f"img{i}.jpg").convert("RGB")).astype(int)
        # image | instances | panoptic | ground truth, each 320 px high, 4 px white gaps; a legend below
        assert full.shape[1] == 4 * panel_w + 3 * 4 and 320 < full.shape[0] <= 320 + 50, full.shape
        tile, legend = full[:320], full[320:]
        # the legend shows a swatch of each cluster in the image: things c1 (disc, odd ids) and c2, stuff s1
        shown = {"c2": palette(2)[1], "s1": palette(2, offset=0.31)[0]}
        if i % 2:
            shown["c1"] = palette(2)[0]
        for name, color in shown.items():
            assert (np.abs(legend - np.asarray(color, int)).sum(axis=2) < 30).sum() >= 60, name  # JPEG
        panels = [tile[:, p * (panel_w + 4):p * (panel_w + 4) + panel_w] for p in range(4)]
        scale = 320 / H
        inside = (int(18 * scale), int((16 + i) * scale))  # centre of the square (y, x)
        outside = (int(4 * scale), int(40 * scale))  # background, no instance
        image, inst, pan, gt = panels
        assert np.abs(gt[inside] - image[inside]).sum() > 40  # GT mask painted over the image
        assert np.abs(inst[inside] - image[inside]).sum() > 40  # predicted instance painted
        assert np.abs(gt[outside] - image[outside]).sum() < 12  # background left alone
        assert np.abs(pan[inside] - pan[outside]).sum() > 40  # thing vs stuff segment colours differ
    page = (out / "summary.html").read_text()
    assert "ground-truth instances" in page and str(tmp_path / "gt.json") in page
    assert page.count("<figure><img src='data:image/jpeg;base64,") == 2


def test_evaluation_page_from_real_metrics(tmp_path):
    manifest, masks = _dataset(tmp_path)
    pred = _predictions(tmp_path, manifest, masks)
    ev = tmp_path / "eval"
    assert main(["evaluate", "--manifest", str(tmp_path / "manifest.json"), "--predictions", str(pred),
                 "--dataset", "synthetic", "--model", "perfect", "--num-stuff", "2",
                 "--out-json", str(ev / "metrics.json"), "--out-md", str(ev / "metrics.md")]) == 0
    md = (ev / "metrics.md").read_text()
    out = tmp_path / "metrics.html"
    assert main(["report", "evaluation", "--title", "Evaluation", "--metrics", str(ev / "metrics.md"),
                 "--out-html", str(out)]) == 0
    page = out.read_text()
    n_rows = sum(1 for line in md.splitlines() if line.startswith("|") and not set(line) <= set("|- :"))
    assert page.count("<tr>") == n_rows > 0
    assert "<h2>Evaluation: <code>perfect</code> on <code>synthetic</code></h2>" in page
    # perfect masks: class-agnostic mask AP is 100 and shows up as a table cell
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["instance"]["class_agnostic"]["segm"]["AP"] > 99
    assert "<td class=num>100.0</td>" in page

    empty = tmp_path / "none.html"
    assert main(["report", "evaluation", "--title", "Evaluation", "--reason", "no ground truth here",
                 "--out-html", str(empty)]) == 0
    assert "No evaluation table: no ground truth here" in empty.read_text()


def test_markdown_subset():
    html = markdown_to_html("# Title `x`\n\ntext line\nmore\n\n| a | b |\n| --- | --- |\n| 1.5 | - |\n\n"
                            "- item **bold**\n- two\n\n> note <b>\n")
    assert html == ("<h2>Title <code>x</code></h2><p>text line more</p>"
                    "<table><tr><th>a</th><th>b</th></tr><tr><td class=num>1.5</td><td class=num>-</td></tr></table>"
                    "<ul><li>item <b>bold</b></li><li>two</li></ul><p class='note'>note &lt;b&gt;</p>")


def test_features_summary_with_skipped_files(tmp_path):
    images = [{"id": i, "file_name": f"a{i}.jpg", "width": 30 + i, "height": 20} for i in range(1, 6)]
    atomic.write_json(tmp_path / "manifest.json", {"dataset": {"kind": "images"}, "root": str(tmp_path),
                                                   "images": images, "annotations": None})
    atomic.write_json(tmp_path / "skipped.json", {"num_images": 7, "skipped": [
        {"file": "bad.jpg", "reason": "truncated: image file is truncated"},
        {"file": "empty.jpg", "reason": "truncated: 0 bytes"}]})
    shards = []
    for s, ids in enumerate(([1, 2, 3], [4, 5])):
        path = tmp_path / f"shard_{s:05d}.zarr"
        n = len(ids)
        write_shard(path, np.zeros((n, 4, 2, 2), np.float16), np.zeros((n, 8), np.float32), np.array(ids),
                    np.array([[20, 30]] * n), {"backbone": "random_vit_tiny", "input_size": 32, "stride": 16,
                                               "shard_index": s, "shard_size": 3, "seconds": 1.5 * n})
        shards.append(str(path))
    out = tmp_path / "out"
    assert main(["report", "features", "--dataset", "images", "--manifest", str(tmp_path / "manifest.json"),
                 "--skipped", str(tmp_path / "skipped.json"), "--features", *shards,
                 "--out-json", str(out / "ingest_summary.json"), "--out-html", str(out / "summary.html")]) == 0
    summary = json.loads((out / "ingest_summary.json").read_text())
    assert summary["images"] == 5 and summary["skipped"] == 2 and summary["skipped_reasons"] == {"truncated": 2}
    assert summary["skipped_fraction"] == round(2 / 7, 4)
    assert [s["images"] for s in summary["shards"]] == [3, 2]
    assert summary["features"]["seconds_total"] == 7.5 and summary["features"]["seconds_per_image"] == 1.5
    assert summary["image_size"] == {"width_min": 31, "width_max": 35, "height_min": 20, "height_max": 20}
    page = (out / "summary.html").read_text()
    assert "Skipped files" in page and "bad.jpg" in page and "seconds per shard" in page

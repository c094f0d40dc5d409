#!/usr/bin/env bash
# Class-agnostic AP50 of a model trained with config.yaml's CPU schedule on 8 coco-mini train images
# (ground truth as one class), predicted at 320/512 and at the training size 224/320 (docs/benchmarks.md).
#   bash benchmarks/test_size_ap.sh [COCO_ROOT] [WORK_DIR]      (~13 min on 2 busy cores)
set -e
REPO=$(cd "$(dirname "$0")/.." && pwd)
COCO=$(realpath "${1:-$REPO/../shared/data/coco-mini}")
mkdir -p "${2:-/tmp/u2seg_test_size}" && cd "${2:-/tmp/u2seg_test_size}"
export PYTHONPATH="$REPO/workflow${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
$PY -m u2seg ingest --kind coco --root "$COCO" --split train --limit 8 --samples-dir s --manifest manifest.json --skipped skipped.json --workers 2
$PY - "$COCO/annotations/instances_train2017.json" <<'PY'
import json, sys
m = json.load(open("manifest.json"))
ids = {im["id"] for im in m["images"]}
gt = json.load(open(sys.argv[1]))
imgs = [im for im in gt["images"] if im["id"] in ids]
anns = [dict(a, category_id=1) for a in gt["annotations"] if a["image_id"] in ids and not a.get("iscrowd", 0)]
json.dump({"images": imgs, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}, open("gt1.json", "w"))
print(len(imgs), "images", len(anns), "instances")
PY
# config.yaml's training settings are the CLI defaults now; K = 1 (class-agnostic GT), no semantic labels
$PY -m u2seg train --instances gt1.json --manifest manifest.json --out-dir train --num-classes 1 --device cpu --no-progress
for s in "320 512" "224 320"; do set -- $s
  $PY -m u2seg predict --weights train/model_final.pth --manifest manifest.json --out-dir pred_$1 --min-size $1 --max-size $2 --device cpu --no-progress
done
$PY - <<'PY'
import json, contextlib, io
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO("gt1.json")
for s in ("320", "224"):
    res = json.load(open(f"pred_{s}/instances_results.json"))
    for r in res: r["category_id"] = 1
    dt = gt.loadRes(res)
    out = {}
    for t in ("bbox", "segm"):
        e = COCOeval(gt, dt, t)
        with contextlib.redirect_stdout(io.StringIO()):
            e.evaluate(); e.accumulate(); e.summarize()
        out[t] = round(100 * e.stats[1], 1)
    print("predict min_size", s, "AP50 box", out["bbox"], "mask", out["segm"])
PY

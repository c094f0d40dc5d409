"""Class-agnostic box and mask AP of MaskCut masks against COCO instances (CutLER protocol, docs/method.md §8.2).

All ground-truth categories are collapsed into one (crowd stays crowd); evaluation runs on the images
of the masks json only; every mask is a detection with score 1 (``--score rank``: 1 / k for the
k-th mask of an image).

  python benchmarks/maskcut_ap.py --gt ../shared/data/coco-mini/annotations/instances_val2017.json \\
      --masks results/coco-val/maskcut/masks.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from u2seg.maskcut.ap import class_agnostic_ap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, required=True, help="COCO instances json (ground truth)")
    ap.add_argument("--masks", type=Path, required=True, help="MaskCut masks.json")
    ap.add_argument("--score", choices=["one", "rank"], default="one")
    ap.add_argument("--json", type=Path, help="also write the metrics here")
    args = ap.parse_args()
    gt = json.loads(args.gt.read_text())
    masks = json.loads(args.masks.read_text())
    res = class_agnostic_ap(gt, masks, score=args.score)
    n_img, n_masks = len(masks["images"]), len(masks["annotations"])
    print(f"{args.masks}: {n_img} images, {n_masks} masks ({n_masks / max(n_img, 1):.2f} / image), score={args.score}")
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]
    print("| | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for iou_type in ("bbox", "segm"):
        print(f"| {iou_type} | " + " | ".join(f"{res[iou_type][k]:.2f}" for k in keys) + " |")
    if args.json:
        args.json.write_text(json.dumps({"images": n_img, "masks": n_masks, "score": args.score, **res}, indent=2))


if __name__ == "__main__":
    main()

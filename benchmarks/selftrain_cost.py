"""Per-step cost of the two self-training methods on CPU, with config.yaml's demo model and schedule sizes.

One method per process (peak memory is the process's): ``--method cutler`` times ``train`` steps on the
images' COCO masks as pseudo-labels (a CutLER round >= 2 trains like this), ``--method cups`` times
``self-train-ema`` steps (teacher labelling + augmentations + student step + EMA). Both start from the
same untrained model file (ImageNet backbone), so this measures cost, not accuracy.

    python benchmarks/selftrain_cost.py --coco-root ../shared/data/coco-mini --method cutler --steps 6
    python benchmarks/selftrain_cost.py --coco-root ../shared/data/coco-mini --method cups --steps 6
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
from dataclasses import fields
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def make_inputs(coco_root: Path, n: int, k: int, out: Path) -> tuple[Path, Path]:
    """Manifest and instances json (COCO masks, class = category index mod k) of the first n train images."""
    coco = json.loads((coco_root / "annotations" / "instances_train2017.json").read_text())
    images = sorted(coco["images"], key=lambda im: im["id"])[:n]
    ids = {im["id"] for im in images}
    cats = sorted(c["id"] for c in coco["categories"])
    anns = [dict(a, category_id=cats.index(a["category_id"]) % k + 1) for a in coco["annotations"]
            if a["image_id"] in ids and not a.get("iscrowd", 0)]
    manifest = {"dataset": {"kind": "images"}, "root": str(coco_root / "train2017"),
                "images": [{k2: im[k2] for k2 in ("id", "file_name", "width", "height")} for im in images],
                "annotations": None}
    (out / "manifest.json").write_text(json.dumps(manifest))
    inst = {"images": manifest["images"], "annotations": anns,
            "categories": [{"id": c + 1, "name": f"cluster_{c}"} for c in range(k)]}
    (out / "instances.json").write_text(json.dumps(inst))
    return out / "manifest.json", out / "instances.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coco-root", type=Path, required=True)
    ap.add_argument("--method", choices=("cutler", "cups"), required=True)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--all-instances", action="store_true",
                    help="cups: instance confidence 0 and RoI score 0.05, so that the untrained teacher's detections "
                         "become pseudo-instances (the student step then has instance targets, as with a trained teacher)")
    args = ap.parse_args()

    import torch

    from u2seg.detector import checkpoint as ckpt
    from u2seg.detector.data import PseudoLabelDataset
    from u2seg.detector.model import ModelConfig, build_model
    from u2seg.detector.params import CupsSelfTrainParams, TrainConfig

    torch.set_num_threads(args.threads)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    k, stuff = config["clustering"]["k"], config["stuff"]["k"]
    mcfg = ModelConfig(**{**config["model"], "num_classes": k, "num_stuff": stuff})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest, instances = make_inputs(args.coco_root, args.images, k, tmp)
        torch.manual_seed(0)
        init = tmp / "init.pth"
        ckpt.save_model(init, build_model(mcfg).state_dict(), mcfg.to_dict(),
                        [{"id": c + 1, "name": f"cluster_{c}", "isthing": 1} for c in range(k)])
        ds = PseudoLabelDataset(instances, manifest, None, k, stuff)
        if args.method == "cutler":
            from u2seg.detector.train import train

            names = {f.name for f in fields(TrainConfig)}
            tc = {key: v for key, v in config["train"].items() if key in names}
            tc.update(device="cpu", max_iter=args.steps, warmup_iters=1, steps=[], checkpoint_period=args.steps)
            s = train(ds, mcfg, TrainConfig(**tc), tmp / "out", init=init, progress=False)
            result = {"seconds_per_step": s["seconds_per_iter"]}
        else:
            from u2seg.detector.ema_selftrain import self_train

            names = {f.name for f in fields(CupsSelfTrainParams)}
            cp = {key: v for key, v in config["selftrain"]["cups"].items() if key in names}
            cp.update(device="cpu", rounds=1, round_steps=args.steps, checkpoint_period=args.steps)
            if args.all_instances:
                cp.update(instance_threshold=0.0, confidence_step=0.0, teacher_score_thresh=0.05)
            s = self_train(ds, mcfg, CupsSelfTrainParams(**cp), tmp / "out", init, progress=False)
            result = {key: s[key] for key in ("seconds_per_step", "teacher_seconds_per_step", "teacher_mb")}
            rows = [json.loads(x) for x in (tmp / "out" / "metrics.jsonl").read_text().splitlines()]
            result["pseudo_instances_per_step"] = sum(r["instances"] for r in rows) / len(rows)
    result.update(method=args.method, steps=args.steps, images=args.images, threads=args.threads,
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

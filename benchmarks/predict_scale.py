"""Peak memory and time of `u2seg predict` on one huge synthetic photo.

    python benchmarks/predict_scale.py --size 9000 8000 --work /tmp/predict_scale

Builds a tiny random model (the test suite's architecture settings, tests/detector/synth.py) and one
H x W JPEG (a smooth random image), then runs `u2seg predict` on it as its own process with every
detection fused (``--instance-score-thresh 0.05``) and prints its peak RSS (``wait4``), CPU and wall
seconds. ``--compare-to`` runs another checkout's ``workflow`` folder on the same inputs (before / after)
and checks that both wrote the same files.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.detector.synth import K, tiny_model_config  # noqa: E402
from u2seg.detector import checkpoint as ckpt  # noqa: E402
from u2seg.detector.model import build_model  # noqa: E402


def make_inputs(work: Path, h: int, w: int) -> tuple[Path, Path]:
    """(model file, manifest) of a tiny random model and one h x w JPEG under ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = tiny_model_config()
    model = work / "model.pth"
    ckpt.save_model(model, build_model(cfg, load_pretrained=False).state_dict(), cfg.to_dict(),
                    [{"id": c + 1, "name": f"cluster_{c}"} for c in range(K)])
    images = work / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, size=(max(h // 100, 2), max(w // 100, 2), 3), dtype=np.uint8)
    Image.fromarray(small).resize((w, h), Image.BILINEAR).save(images / "huge.jpg", quality=90)
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps({"dataset": {"kind": "images"}, "root": str(images), "annotations": None,
                                    "images": [{"id": 1, "file_name": "huge.jpg", "width": w, "height": h}]}))
    return model, manifest


def run_predict(workflow: Path, model: Path, manifest: Path, out: Path, args: argparse.Namespace) -> dict:
    """One `u2seg predict` process: peak RSS (MiB), CPU and wall seconds."""
    env = dict(os.environ, PYTHONPATH=str(workflow))
    cmd = [sys.executable, "-m", "u2seg", "predict", "--weights", str(model), "--manifest", str(manifest),
           "--out-dir", str(out), "--min-size", str(args.min_size), "--max-size", str(args.max_size),
           "--instance-score-thresh", "0.05", "--threads", str(args.threads), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict failed:\n{log[-3000:]}")
    return {"workflow": str(workflow), "peak_mib": round(usage.ru_maxrss / 1024),
            "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "detections": json.loads((out / "summary.json").read_text())["detections"]}


def same_outputs(a: Path, b: Path) -> bool:
    """Whether two predict output folders hold byte-identical json and PNG files (summary.json aside)."""
    names = ["instances_results.json", "panoptic.json", "panoptic/huge.png", "semantic/huge.png"]
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names if (a / n).exists() or (b / n).exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[9000, 8000], metavar=("H", "W"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/predict_scale"))
    parser.add_argument("--min-size", type=int, default=224, help="test short side (config.yaml predict.min_size)")
    parser.add_argument("--max-size", type=int, default=320, help="test long-side cap (predict.max_size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare-to", type=Path, help="another checkout's workflow/ folder (e.g. before)")
    args = parser.parse_args()
    h, w = args.size
    model, manifest = make_inputs(args.work, h, w)
    rows = [run_predict(REPO / "workflow", model, manifest, args.work / "out", args)]
    if args.compare_to:
        rows.append(run_predict(args.compare_to, model, manifest, args.work / "out_compare", args))
        rows[-1]["same_outputs"] = same_outputs(args.work / "out", args.work / "out_compare")
    for row in rows:
        print(json.dumps({"image": f"{h} x {w}", "pixels": h * w, **row}))


if __name__ == "__main__":
    main()

"""Forward time of u2seg's detector vs detectron2 on the same 800 x 1216 image (CPU, 1 thread).

Both models are U2Seg's config (``u2seg_R50_300.yaml``: PanopticFPN + CascadeROIHeads, R50-FPN, K = 300,
28 semantic classes) with the same seeded random weights (detectron2's model saved by
DetectionCheckpointer, imported with ``u2seg import-d2``), so both find 100 detections. Measured:
  raw      normalisation -> backbone + FPN -> RPN -> 3 cascade stages -> NMS -> mask head -> semantic head
           (detectron2: ``model.inference(do_postprocess=False)``; u2seg: ``model(images)``)
  full     raw + box scaling, mask pasting at 800 x 1216, semantic resize/argmax and panoptic fusion
           (detectron2: ``model([input])``; u2seg: ``postprocess`` + ``panoptic_fusion``)
Each is the median of ``--repeats`` runs after one warm-up run (wall and process CPU seconds; on a
shared machine the CPU time is the steadier number); the models run alternately.

Needs detectron2 installed (the parity tests install it: ``pytest tests/detector/test_d2_parity.py``).

  PYTHONPATH=workflow:. python benchmarks/d2_forward.py [--repeats 3] [--image PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "coco-mini" / "val2017" / "000000005001.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--k", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model as d2_build_model

    from tests.detector.d2_env import randomize_, u2seg_d2_cfg
    from u2seg.detector.d2_import import import_checkpoint
    from u2seg.detector.predict import load_model, panoptic_fusion, postprocess

    cfg = u2seg_d2_cfg(args.k)
    d2_model = d2_build_model(cfg).eval()
    randomize_(d2_model, seed=13)
    with tempfile.TemporaryDirectory() as tmp:
        DetectionCheckpointer(d2_model, save_dir=tmp).save("model_final")
        import_checkpoint(Path(tmp) / "model_final.pth", Path(tmp) / "u2seg.pth")
        model, _ = load_model(Path(tmp) / "u2seg.pth", torch.device("cpu"))
    rgb = np.asarray(Image.open(args.image).convert("RGB").resize((1216, 800), Image.BILINEAR))
    image = torch.as_tensor(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
    d2_input = {"image": image, "height": 800, "width": 1216}

    def d2_raw():
        return d2_model.inference([d2_input], do_postprocess=False)

    def d2_full():
        return d2_model([d2_input])

    def ours_raw():
        return model([image])

    def ours_full():
        res = model([image])[0]
        post = postprocess(res, (800, 1216), (800, 1216))
        return panoptic_fusion(post["masks"], post["scores"], post["labels"], post["semantic"], args.k)

    runs = {"detectron2 raw": d2_raw, "u2seg raw": ours_raw, "detectron2 full": d2_full, "u2seg full": ours_full}
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for name, fn in runs.items():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        n_d2 = len(d2_full()[0]["instances"])
        n_ours = int(model([image])[0]["boxes"].shape[0])
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    med_cpu = {k: round(statistics.median(v), 3) for k, v in cpu.items()}
    print(json.dumps({"image": str(args.image), "size": [800, 1216], "threads": args.threads, "k": args.k,
                      "detections": {"detectron2": n_d2, "u2seg": n_ours}, "median_s": med,
                      "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
                      "median_cpu_s": med_cpu,
                      "ratio_raw": round(med["u2seg raw"] / med["detectron2 raw"], 3),
                      "ratio_full": round(med["u2seg full"] / med["detectron2 full"], 3),
                      "cpu_ratio_raw": round(med_cpu["u2seg raw"] / med_cpu["detectron2 raw"], 3),
                      "cpu_ratio_full": round(med_cpu["u2seg full"] / med_cpu["detectron2 full"], 3)}, indent=2))


if __name__ == "__main__":
    main()

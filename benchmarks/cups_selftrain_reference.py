"""Record CUPS's self-training pieces on fixed inputs, for tests/detector/test_cups_selftrain.py (run by hand).

It imports CUPS (visinf/cups, Apache-2.0), which is no dependency of this project, and writes
``tests/detector/data/cups_selftrain_reference.npz`` + ``.json``:
  (a) EMA: CUPS's ``SelfSupervisedModel.on_train_batch_end`` applied N times to a small seeded module whose
      student parameters move by recorded updates between the calls; and which state-dict tensors of
      CUPS's own self-training model (``build_model_self``, frozen BN) one EMA call changes;
  (b) pseudo-labels: CUPS's panoptic combination (``combine_semantic_and_instance_outputs``, as its TTA
      teacher calls it) and ``SelfSupervisedModel.make_pseudo_labels`` on seeded teacher outputs
      (semantic probabilities, instance masks, scores, classes) at two instance confidences;
  (c) the schedule and optimiser: CUPS's Cityscapes self-training config, the instance confidence its
      teacher applies (``cfg.TEST.INSTANCE_SCORE_THRESH``) and its round counter, and the parameters and
      hyper-parameters of ``configure_optimizers``.

Run (from this repository's root, CUPS at /work/ref/cups, see its README for the environment):
    PYTHONPATH=/work/reflib:/work/refshim:/work/ref/cups python benchmarks/cups_selftrain_reference.py \
        --cups /work/ref/cups --out tests/detector/data
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

N_EMA_STEPS = 5
THRESHOLDS = (0.7, 0.75)
STUFF_AREA = 64
H, W, C, N_INST, K = 40, 56, 5, 7, 3


def toy_module() -> nn.Module:
    """Conv + GroupNorm + frozen BN (buffers) + linear: parameters and buffers of the kinds EMA sees."""
    from detectron2.layers import FrozenBatchNorm2d

    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), FrozenBatchNorm2d(4), nn.Flatten(),
                         nn.Linear(4, 3))


def record_ema(out: dict, arrays: dict) -> None:
    from cups.pl_model_self import SelfSupervisedModel

    torch.manual_seed(0)
    student, teacher = toy_module(), toy_module()  # different initial weights
    for b in teacher.buffers():
        b.normal_()
    names = [n for n, _ in student.named_parameters()]
    for n, t in teacher.state_dict().items():
        arrays[f"ema/teacher0/{n}"] = t.numpy().copy()
    for n, t in student.state_dict().items():
        arrays[f"ema/student0/{n}"] = t.numpy().copy()
    fake = SimpleNamespace(model=student, teacher_model=SimpleNamespace(model=teacher))
    g = torch.Generator().manual_seed(1)
    for step in range(N_EMA_STEPS):
        with torch.no_grad():
            for n, param in student.named_parameters():
                delta = torch.randn(param.shape, generator=g) * 0.1
                arrays[f"ema/update{step}/{n}"] = delta.numpy()
                param.add_(delta)
        SelfSupervisedModel.on_train_batch_end(fake, None, None, step)
    for n, t in teacher.state_dict().items():
        arrays[f"ema/teacher{N_EMA_STEPS}/{n}"] = t.numpy().copy()
    out["ema"] = {"steps": N_EMA_STEPS, "parameters": names,
                  "state": list(teacher.state_dict().keys())}


def teacher_outputs(seed: int = 3) -> dict[str, torch.Tensor]:
    """Seeded teacher outputs: smooth semantic probabilities, overlapping box-shaped instance masks."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(C, H // 8, W // 8, generator=g) * 3
    logits = torch.nn.functional.interpolate(logits[None], (H, W), mode="bilinear", align_corners=False)[0]
    probs = logits.softmax(dim=0)
    masks = torch.zeros(N_INST, H, W, dtype=torch.bool)
    for i in range(N_INST):
        y0, x0 = int(torch.randint(0, H - 12, (1,), generator=g)), int(torch.randint(0, W - 14, (1,), generator=g))
        h, w = int(torch.randint(6, 16, (1,), generator=g)), int(torch.randint(6, 20, (1,), generator=g))
        masks[i, y0:y0 + h, x0:x0 + w] = True
    masks[-1] = False  # an empty mask
    scores = torch.tensor([0.95, 0.9, 0.8, 0.74, 0.72, 0.6, 0.99])
    classes = torch.randint(0, K, (N_INST,), generator=g)
    return {"probs": probs, "masks": masks, "scores": scores, "classes": classes}


def record_pseudo_labels(out: dict, arrays: dict) -> None:
    from detectron2.structures import Instances
    from cups.model.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
    from cups.pl_model_self import SelfSupervisedModel

    t = teacher_outputs()
    for k, v in t.items():
        arrays[f"teacher/{k}"] = v.numpy()
    image = torch.zeros(3, H, W)
    cases = []
    for thr in THRESHOLDS:
        inst = Instances((H, W), pred_masks=t["masks"], scores=t["scores"], pred_classes=t["classes"])
        pan, segments = combine_semantic_and_instance_outputs(inst, t["probs"].argmax(dim=0), 0.5, STUFF_AREA, thr)
        fake = SimpleNamespace(hparams=SimpleNamespace(config=SimpleNamespace(
            SELF_TRAINING=SimpleNamespace(SEMANTIC_SEGMENTATION_THRESHOLD=0.5))))
        labels = SelfSupervisedModel.make_pseudo_labels(
            fake, [{"panoptic_seg": (pan, segments), "sem_seg": t["probs"]}], [{"image": image}], tuple(range(C)))[0]
        key = f"pseudo/{thr}"
        arrays[f"{key}/panoptic"] = pan.numpy()
        arrays[f"{key}/semantic"] = labels["sem_seg"].numpy()
        arrays[f"{key}/masks"] = labels["instances"].gt_masks.tensor.numpy()
        arrays[f"{key}/classes"] = labels["instances"].gt_classes.numpy()
        arrays[f"{key}/boxes"] = labels["instances"].gt_boxes.tensor.numpy()
        cases.append({"threshold": thr, "segments": [{k: (v.item() if hasattr(v, "item") else v)
                                                      for k, v in s.items()} for s in segments]})
    out["pseudo"] = {"cases": cases, "semantic_threshold": 0.5, "overlap": 0.5, "stuff_area": STUFF_AREA,
                     "num_classes": K}


def record_schedule_and_optimizer(out: dict, cups_root: Path) -> None:
    import cups
    import cups.model.model as cups_model
    from cups.pl_model_self import build_model_self

    d2_get_cfg = cups_model.get_cfg

    def cpu_cfg():  # detectron2's default device is cuda; CUPS then swaps SyncBN for BN itself
        cfg = d2_get_cfg()
        cfg.MODEL.DEVICE = "cpu"
        return cfg

    cups_model.get_cfg = cpu_cfg

    config = cups.get_default_config(experiment_config_file=str(cups_root / "configs/train_self_cityscapes.yaml"),
                                     command_line_arguments=["MODEL.USE_DINO", "False"])
    cwd = os.getcwd()
    os.chdir(cups_root)  # CUPS reads its model yaml relative to its root
    try:
        model = build_model_self(config, thing_pseudo_classes=tuple(range(K)), stuff_pseudo_classes=tuple(range(C - 1)),
                                 thing_classes=set(range(K)), stuff_classes=set(range(K, K + C - 1)), freeze_bn=True)
    finally:
        os.chdir(cwd)
    optimizer = model.configure_optimizers()
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trained = [n for n, p in model.model.named_parameters() if id(p) in ids]
    group = optimizer.param_groups[0]
    # which state-dict tensors one EMA call changes (student perturbed everywhere)
    before = {k: v.clone() for k, v in model.teacher_model.model.state_dict().items()}
    with torch.no_grad():
        for v in model.model.state_dict().values():
            if v.is_floating_point():
                v.add_(1.0)
    model.on_train_batch_end(None, None, 0)
    after = model.teacher_model.model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    unchanged = sorted(k for k in before if torch.equal(before[k], after[k]))
    st = config.SELF_TRAINING
    out["schedule"] = {
        "rounds": st.ROUNDS, "round_steps": st.ROUND_STEPS, "confidence_step": st.CONFIDENCE_STEP,
        "semantic_threshold": st.SEMANTIC_SEGMENTATION_THRESHOLD,
        "tta_confidence": config.MODEL.TTA_INFERENCE_CONFIDENCE_THRESHOLD,
        "inference_confidence": config.MODEL.INFERENCE_CONFIDENCE_THRESHOLD,
        "teacher_instance_score_thresh": model.teacher_model.cfg.TEST.INSTANCE_SCORE_THRESH,
        "round_counter": model.round,
        "max_steps": st.ROUND_STEPS * st.ROUNDS,
        "batch_size": config.TRAINING.BATCH_SIZE,
        "gradient_clip": [config.TRAINING.GRADIENT_CLIP_ALGORITHM, config.TRAINING.GRADIENT_CLIP_VAL],
        "copy_paste": config.AUGMENTATION.COPY_PASTE,
        "resolutions": [list(r) for r in config.AUGMENTATION.RESOLUTIONS],
        "tta_scales": list(config.MODEL.TTA_SCALES),
    }
    out["optimizer"] = {"type": type(optimizer).__name__, "lr": group["lr"], "weight_decay": group["weight_decay"],
                        "betas": list(group["betas"]), "trained": trained,
                        "all_parameters": [n for n, _ in model.model.named_parameters()]}
    out["ema_state"] = {"changed": changed, "unchanged": unchanged}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cups", default="/work/ref/cups", help="CUPS checkout")
    ap.add_argument("--out", default="tests/detector/data", help="fixture folder")
    args = ap.parse_args()
    out: dict = {"source": "visinf/cups 78fc273, recorded by benchmarks/cups_selftrain_reference.py"}
    arrays: dict[str, np.ndarray] = {}
    record_ema(out, arrays)
    record_pseudo_labels(out, arrays)
    record_schedule_and_optimizer(out, Path(args.cups))
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dest / "cups_selftrain_reference.npz", **arrays)
    (dest / "cups_selftrain_reference.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {dest}/cups_selftrain_reference.npz, .json")


if __name__ == "__main__":
    main()

"""u2seg pseudo-labels and predictions as detectron2 datasets (real detectron2): JPEG, PNG and mixed
extensions, through DatasetCatalog and DatasetMapper, one PanopticFPN training step; on a JPEG dataset
the records equal detectron2's own ``register_coco_panoptic_separated`` / ``load_coco_panoptic_json``.
This is exactly the snippet of docs/detectron2.md section 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.detector.d2_env import detectron2, u2seg_d2_cfg  # noqa: F401 (fixture)
from tests.detector.synth import tiny_model_config
from u2seg.cli import main as cli_main
from u2seg.coco_format import instance_annotation, rgb2id
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.d2_datasets import register_u2seg
from u2seg.detector.model import build_model
from u2seg.pseudo.panoptic.merge import thing_categories

K, S = 3, 4
H, W = 64, 96
KINDS = {"jpeg": ("jpg", "jpg", "jpg"), "png": ("png", "png", "png"), "mixed": ("jpg", "png", "jpeg")}


def make_pseudo_labels(root: Path, exts: tuple[str, ...], seed: int = 0) -> Path:
    """Images + manifest + class-aware instances + stuff maps, then `u2seg merge-panoptic` (the real
    pseudo-label writer) -> ``root/pseudo/{instances.json, panoptic.json, panoptic/, semantic/}``."""
    rng = np.random.default_rng(seed)
    img_dir, stuff_dir, pseudo = root / "images", root / "stuff", root / "pseudo"
    for d in (img_dir, stuff_dir, pseudo):
        d.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, ext in enumerate(exts):
        img = rng.integers(0, 80, size=(H, W, 3), dtype=np.uint8)
        stuff = np.zeros((H, W), dtype=np.uint8)
        stuff[H // 2:] = 1 + i % (S - 1)
        for j in range(2):
            y0, x0 = int(rng.integers(0, H - 24)), int(rng.integers(0, W - 30))
            mask = np.zeros((H, W), dtype=bool)
            mask[y0:y0 + 20, x0:x0 + 26] = True
            img[mask] = rng.integers(120, 255, size=3, dtype=np.uint8)
            anns.append(instance_annotation(mask, len(anns) + 1, i + 1, 1 + (i + j) % K))
        name = f"photo_{i}.{ext}"
        Image.fromarray(img).save(img_dir / name, quality=95)
        Image.fromarray(stuff).save(stuff_dir / f"photo_{i}.png")
        images.append({"id": i + 1, "file_name": name, "width": W, "height": H})
    (root / "manifest.json").write_text(json.dumps({"root": str(img_dir), "images": images}))
    (pseudo / "instances.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                       "categories": thing_categories(K)}))
    assert cli_main(["merge-panoptic", "--manifest", str(root / "manifest.json"),
                     "--instances", str(pseudo / "instances.json"), "--stuff-dir", str(stuff_dir),
                     "--k", str(K), "--num-stuff", str(S), "--out-json", str(pseudo / "panoptic.json"),
                     "--out-panoptic", str(pseudo / "panoptic"), "--out-semantic", str(pseudo / "semantic"),
                     "--gallery", str(root / "gallery"), "--summary", str(root / "summary.json")]) == 0
    return root


def _d2_train_cfg(name: str):
    cfg = u2seg_d2_cfg(K)
    cfg.merge_from_list([
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", S + 1,
        # plain BN: SyncBN needs a process group in training mode
        "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", "BN",
        "DATASETS.TRAIN", (name,), "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2,
        "INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 128,
    ])
    return cfg


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pseudo_labels_register_and_map(detectron2, tmp_path, kind):  # noqa: F811
    from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog

    R = make_pseudo_labels(tmp_path, KINDS[kind])
    # --- the docs/detectron2.md snippet ---
    names = register_u2seg(
        f"u2seg_pseudo_{kind}", manifest=R / "manifest.json",
        instances_json=R / "pseudo/instances.json", semantic_dir=R / "pseudo/semantic",
        panoptic_json=R / "pseudo/panoptic.json", panoptic_dir=R / "pseudo/panoptic")
    # ---
    assert names == [f"u2seg_pseudo_{kind}_separated", f"u2seg_pseudo_{kind}_panoptic"]
    sep = DatasetCatalog.get(names[0])
    assert [Path(r["file_name"]).suffix for r in sep] == [f".{e}" for e in KINDS[kind]]
    assert MetadataCatalog.get(names[0]).thing_classes == [c["name"] for c in thing_categories(K)]
    mapper = DatasetMapper(_d2_train_cfg(names[0]), is_train=True)
    for rec in sep:
        out = mapper(dict(rec))
        inst, sem = out["instances"], out["sem_seg"]
        assert len(inst) == 2 and int(inst.gt_classes.max()) < K
        assert inst.gt_masks.tensor.any(dim=(1, 2)).all()
        assert set(torch.unique(sem).tolist()) <= set(range(S + 1)) | {255} and bool((sem == 0).any())
    pan = DatasetCatalog.get(names[1])
    for rec in pan:
        ids = rgb2id(np.asarray(Image.open(rec["pan_seg_file_name"]).convert("RGB")))
        assert set(np.unique(ids)) - {0} == {s["id"] for s in rec["segments_info"]}
        for s in rec["segments_info"]:
            assert (s["category_id"] < K) == s["isthing"]
    if kind == "jpeg":  # detectron2's own loaders work on COCO's layout: same records
        _compare_with_detectron2_loaders(R, sep, pan)


def _compare_with_detectron2_loaders(R: Path, sep: list[dict], pan: list[dict]) -> None:
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_panoptic_separated
    from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json
    from u2seg.detector.d2_datasets import metadata

    cats = json.loads((R / "pseudo/panoptic.json").read_text())["categories"]
    meta_sep, meta_pan = metadata(cats)
    meta = {k: v for k, v in meta_sep.items() if k != "ignore_label"}  # (detectron2 sets it itself)
    register_coco_panoptic_separated("d2_own", meta, str(R / "images"), str(R / "pseudo/panoptic"),
                                     str(R / "pseudo/panoptic.json"), str(R / "pseudo/semantic"),
                                     str(R / "pseudo/instances.json"))
    theirs = sorted(DatasetCatalog.get("d2_own_separated"), key=lambda r: r["image_id"])
    assert [(r["file_name"], r["sem_seg_file_name"]) for r in theirs] == \
        [(r["file_name"], r["sem_seg_file_name"]) for r in sep]
    for a, b in zip(theirs, sep):
        assert [(x["category_id"], x["bbox"], x["segmentation"]["counts"]) for x in a["annotations"]] == \
            [(x["category_id"], x["bbox"], x["segmentation"]["counts"]) for x in b["annotations"]]
    own = load_coco_panoptic_json(str(R / "pseudo/panoptic.json"), str(R / "images"), str(R / "pseudo/panoptic"),
                                  meta_pan)
    assert [(r["file_name"], r["pan_seg_file_name"], r["segments_info"]) for r in own] == \
        [(r["file_name"], r["pan_seg_file_name"], r["segments_info"]) for r in pan]


def test_predictions_register_and_panoptic_fpn_trains_one_step(detectron2, tmp_path):  # noqa: F811
    """Mixed-extension pseudo-labels train PanopticFPN one step; `u2seg predict` outputs register too."""
    from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_train_loader
    from detectron2.modeling import build_model as d2_build_model
    from detectron2.utils.events import EventStorage

    R = make_pseudo_labels(tmp_path, KINDS["mixed"], seed=1)
    names = register_u2seg("u2seg_train", R / "manifest.json", R / "pseudo/panoptic.json",
                           R / "pseudo/instances.json", R / "pseudo/semantic", R / "pseudo/panoptic")
    cfg = _d2_train_cfg(names[0])
    torch.manual_seed(0)
    model = d2_build_model(cfg).train()
    loader = build_detection_train_loader(cfg, mapper=DatasetMapper(cfg, is_train=True))
    batch = next(iter(loader))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    before = model.sem_seg_head.predictor.weight.detach().clone()
    with EventStorage(0):
        losses = model(batch)
    assert {"loss_sem_seg", "loss_mask", "loss_rpn_cls", "loss_cls_stage0", "loss_box_reg_stage2"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    opt.step()
    assert not torch.equal(before, model.sem_seg_head.predictor.weight)
    # predictions of a u2seg model file on the same images
    mcfg = tiny_model_config(num_classes=K, num_stuff=S)
    ckpt.save_model(R / "m.pth", build_model(mcfg, load_pretrained=False).state_dict(), mcfg.to_dict(), [])
    pred = R / "pred"
    assert cli_main(["predict", "--weights", str(R / "m.pth"), "--manifest", str(R / "manifest.json"),
                     "--out-dir", str(pred), "--min-size", "64", "--max-size", "128", "--device", "cpu",
                     "--score-thresh", "0.0", "--no-progress"]) == 0
    pnames = register_u2seg("u2seg_pred", R / "manifest.json", pred / "panoptic.json",
                            pred / "instances_results.json", pred / "semantic", pred / "panoptic")
    recs = DatasetCatalog.get(pnames[0])
    results = json.loads((pred / "instances_results.json").read_text())
    assert sum(len(r["annotations"]) for r in recs) == len(results) > 0
    mapper = DatasetMapper(cfg, is_train=False)
    out = mapper(dict(recs[1]))
    assert out["image"].shape[0] == 3 and "sem_seg" in out
    assert len(DatasetCatalog.get(pnames[1])) == 3

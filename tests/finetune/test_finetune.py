"""Fine-tuning pieces: contiguous ids, re-heading, evaluation mapping, the comparison table."""
from __future__ import annotations

import json

import numpy as np
import torch

from u2seg.coco_format import instance_annotation
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.model import ModelConfig, build_model
from u2seg.finetune.cli import comparison_table, contiguous, restrict_to_manifest
from u2seg.finetune.rehead import rehead, rehead_state_dict


def test_contiguous_ids_round_trip():
    coco = {"images": [], "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"},
                                          {"id": 18, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 90}, {"id": 2, "image_id": 1, "category_id": 18}]}
    out, back = contiguous(coco)
    assert [c["id"] for c in out["categories"]] == [1, 2, 3]
    assert [c["name"] for c in out["categories"]] == ["person", "dog", "toothbrush"]
    assert [a["category_id"] for a in out["annotations"]] == [3, 2]
    assert back == {1: 1, 2: 18, 3: 90}


def test_restrict_to_manifest():
    coco = {"images": [{"id": 1}, {"id": 2}], "annotations": [{"image_id": 1}, {"image_id": 2}], "categories": []}
    out = restrict_to_manifest(coco, {"images": [{"id": 2}]})
    assert out["images"] == [{"id": 2}] and out["annotations"] == [{"image_id": 2}]


def test_rehead_state_dict_keeps_fitting_tensors():
    src = {"a": torch.ones(2, 3), "b": torch.ones(5), "gone": torch.ones(1)}
    tgt = {"a": torch.zeros(2, 3), "b": torch.zeros(7), "new": torch.zeros(4)}
    out, copied, fresh = rehead_state_dict(src, tgt)
    assert copied == ["a"] and fresh == ["b", "new"]
    assert torch.equal(out["a"], torch.ones(2, 3)) and torch.equal(out["b"], torch.zeros(7))


def test_rehead_model_file(tmp_path):
    cfg = ModelConfig(num_classes=5, num_stuff=3, backbone_weights=None, fpn_channels=32, box_fc_dim=64,
                      mask_conv_dim=16, sem_conv_dim=16, sem_norm_groups=8, rpn_post_nms_topk_train=50,
                      roi_batch_per_image=16)
    torch.manual_seed(0)
    model = build_model(cfg, load_pretrained=False)
    src = tmp_path / "u2seg.pth"
    ckpt.save_model(src, model.state_dict(), cfg.to_dict(), [{"id": i + 1, "name": f"c{i}"} for i in range(5)])
    cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]
    meta = rehead(src, 2, cats, tmp_path / "init.pth")
    obj = ckpt.load_model_file(tmp_path / "init.pth")
    assert obj["model_config"]["num_classes"] == 2 and obj["model_config"]["num_stuff"] == 0
    assert obj["categories"] == cats
    new = build_model(ModelConfig.from_dict(dict(obj["model_config"], backbone_weights=None)), load_pretrained=False)
    assert set(obj["model"]) == set(new.state_dict())  # loads into the re-headed architecture
    own = model.state_dict()
    kept = [k for k in obj["model"] if k in own and own[k].shape == obj["model"][k].shape]
    assert len(kept) == meta["copied"] and meta["reinitialised"]
    for k in kept:  # every fitting tensor is the U2Seg one
        assert torch.equal(obj["model"][k], own[k])
    # the class-specific layers changed shape and were re-initialised
    assert any("cls" in k or "predictor" in k for k in meta["reinitialised"])
    assert not any(k.startswith("sem_head") for k in obj["model"])


def test_evaluate_maps_ids_back_to_coco(tmp_path):
    from u2seg.cli import main

    h, w = 40, 50
    mask = np.zeros((h, w), bool)
    mask[5:25, 10:30] = True
    ann = instance_annotation(mask, 1, 7, 18)  # a COCO 'dog' (id 18)
    gt = {"images": [{"id": 7, "file_name": "x.jpg", "width": w, "height": h}], "annotations": [ann],
          "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    manifest = {"root": str(tmp_path), "images": gt["images"], "annotations": str(tmp_path / "gt.json")}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    labelled, _ = contiguous(gt)
    labelled["info"] = {"contiguous_to_coco": {"1": 1, "2": 18}}
    (tmp_path / "labelled.json").write_text(json.dumps(labelled))
    det = {"image_id": 7, "category_id": 2, "bbox": ann["bbox"], "score": 0.9, "segmentation": ann["segmentation"]}
    (tmp_path / "pred.json").write_text(json.dumps([det]))
    assert main(["finetune", "evaluate", "--predictions", str(tmp_path / "pred.json"), "--labelled",
                 str(tmp_path / "labelled.json"), "--manifest", str(tmp_path / "m.json"), "--init-name", "u2seg",
                 "--out", str(tmp_path / "metrics.json")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert abs(metrics["bbox"]["AP"] - 100.0) < 1e-6 and abs(metrics["segm"]["AP"] - 100.0) < 1e-6
    # labelled as the wrong class: AP 0
    (tmp_path / "pred.json").write_text(json.dumps([{**det, "category_id": 1}]))
    main(["finetune", "evaluate", "--predictions", str(tmp_path / "pred.json"), "--labelled",
          str(tmp_path / "labelled.json"), "--manifest", str(tmp_path / "m.json"), "--init-name", "u2seg",
          "--out", str(tmp_path / "metrics.json")])
    assert json.loads((tmp_path / "metrics.json").read_text())["bbox"]["AP"] == 0.0


def test_comparison_table():
    row = {"init": "u2seg", "bbox": {"AP": 12.345, "AP50": 20.0}, "segm": {"AP": 10.0, "AP50": None}}
    md = comparison_table([row, {**row, "init": "baseline"}],
                          {"images": 40, "instances": 100, "categories_covered": 60, "categories_total": 80})
    assert "| u2seg | 12.35 | 20.00 | 10.00 | n/a |" in md and "| baseline |" in md
    assert "60/80 classes" in md

"""Evaluation protocol records (u2seg.registry.PROTOCOLS): the evaluation runs exactly the records,
core and opt-in alike, and writes each record's description into metrics.json."""
from __future__ import annotations

import argparse
import json

import pytest

from tests.conftest import COCO_PANOPTIC_SAMPLE, require_shared
from u2seg import atomic, registry
from u2seg.evaluation import cityscapes, dataset_gt, protocols
from u2seg.ingest import build_manifest

CORE = [n for n, p in registry.PROTOCOLS.items() if not p.opt_in]


def test_records_name_the_runners():
    assert list(protocols.EXTRA_PROTOCOLS) == list(registry.OPT_IN_PROTOCOLS)
    assert set(cityscapes.PROTOCOLS) == {n for n in registry.OPT_IN_PROTOCOLS if n.startswith("cityscapes/")}
    assert list(protocols.PROTOCOLS) == CORE
    assert {p.task for p in registry.PROTOCOLS.values()} == {"instance", "semantic", "panoptic", "cityscapes"}
    assert {p.metric for p in registry.PROTOCOLS.values()} == {"AP", "mIoU", "PQ"}
    for p in registry.PROTOCOLS.values():
        assert set(p.dataset_kinds) <= {k for k, v in registry.DATASET_KINDS.items() if v.ground_truth}, p.name


def test_zero_shot_columns_name_core_records():
    from u2seg.evaluation import zero_shot

    for column, path in zero_shot.COLUMNS:
        assert "/".join(path[:2]) in protocols.PROTOCOLS, column


def test_describe_fills_settings():
    d = protocols.default_settings()
    text = registry.PROTOCOLS["instance/hungarian"].describe(**d["hungarian"])
    assert "score >= 0.0, bbox IoU > 0.5, crowd GT excluded" in text
    assert "IoU > 0.15 votes" in registry.PROTOCOLS["cityscapes/u2seg"].describe(vote_iou=0.15)
    with pytest.raises(KeyError):
        registry.PROTOCOLS["semantic/u2seg16"].describe()  # its setting is required


def test_cli_lists_the_opt_in_protocols():
    from u2seg.evaluation import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "protocol"]
    assert all(name in action.help for name in registry.OPT_IN_PROTOCOLS)


def test_every_core_record_is_run_and_described(tmp_path):
    """The GT of the COCO panoptic sample as its own prediction: every core protocol appears in metrics.json
    under task.short with its record's description; an unknown opt-in name is refused."""
    sample = require_shared(COCO_PANOPTIC_SAMPLE)
    pan_json = sample / "annotations" / "panoptic_val2017.json"
    man, _ = build_manifest("coco-format", sample / "val2017", panoptic_json=pan_json,
                            panoptic_dir=sample / "annotations" / "panoptic_val2017", name="pansample")
    data = json.loads(pan_json.read_text())
    gt, _ = dataset_gt.manifest_instances(man, [int(im["id"]) for im in man["images"]])
    pred = tmp_path / "pred"
    (pred / "panoptic").mkdir(parents=True)
    for a in data["annotations"]:
        (pred / "panoptic" / a["file_name"]).write_bytes(
            (sample / "annotations" / "panoptic_val2017" / a["file_name"]).read_bytes())
    atomic.write_json(pred / "panoptic.json", {"annotations": data["annotations"], "categories": data["categories"]})
    dets = [dict(a, score=1.0) for a in gt["annotations"] if not a["iscrowd"]]
    kw = {"instances_data": dets, "panoptic_json": pred / "panoptic.json", "panoptic_dir": pred / "panoptic",
          "num_stuff": 53}
    m = protocols.evaluate(man, "pansample", "gt", **kw)
    s = m["settings"]
    params = {"instance/majority": s["majority"], "instance/hungarian": s["hungarian"],
              "semantic/u2seg16": {"vote_iou": s["semantic_vote_iou"]}}
    for name in CORE:
        rec = registry.PROTOCOLS[name]
        assert m[rec.task][rec.short]["protocol"] == rec.describe(**params.get(name, {})), name
    assert "protocols" not in m
    from u2seg.errors import UserError

    with pytest.raises(UserError, match="unknown evaluation protocol 'cityscapes/nope'"):
        protocols.evaluate(man, "pansample", "gt", extra_protocols=["cityscapes/nope"], **kw)

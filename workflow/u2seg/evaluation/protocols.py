"""Every evaluation protocol in one pass: ``evaluate(...) -> metrics dict`` (what metrics.json holds).

Mappings are always fitted on the evaluated set itself (as U2Seg does) and recorded with the numbers.

instance  class_agnostic  CutLER: all categories collapsed into one, box + mask COCOeval.
          majority        U2Seg released: votes of predictions with score >= 0.6 for GT with box
                          IoU > 0.7 (crowd included); cluster -> most-voted class; unmapped clusters
                          dropped. Box and mask (U2Seg's code reports box only).
          hungarian       strict: one-to-one Hungarian on the vote matrix (defaults: score >= 0,
                          box IoU > 0.5, crowd excluded); predictions of unmatched clusters stay as
                          false positives of their most-overlapping class (most frequent class when
                          they overlap nothing).
semantic  stego27         COCO-Stuff-27 GT (super-categories), one-to-one Hungarian over the set, as
                          STEGO's UnsupervisedMetrics computes it (stego27_strict: without its artefacts).
          u2seg16         U2Seg released 16 classes, per-image IoU > 0.15 majority votes.
panoptic  u2seg           things by the `majority` mapping, stuff by the `u2seg16` mapping, unmapped
                          segments VOID; GT stuff relabelled to its super-category (segments not
                          merged), as U2Seg's released evaluation.
          hungarian       things by the `hungarian` mapping, stuff by a one-to-one Hungarian between
                          stuff labels and stuff super-categories (pixel overlap); segments of
                          unmatched clusters are false positives; GT stuff merged per super-category.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from u2seg import registry
from u2seg.errors import UserError
from u2seg.evaluation import gt as gtmod
from u2seg.evaluation import cityscapes, dataset_gt, instance, matching, panoptic, semantic
from u2seg.manifest import image_stem
from u2seg.params import STUFF_CLUSTERS

log = logging.getLogger(__name__)

# Description of every core protocol, from its record (u2seg.registry.PROTOCOLS: the one list).
PROTOCOLS = {n: p.description for n, p in registry.PROTOCOLS.items() if not p.opt_in}

# Runner of every protocol a dataset opts into (config `datasets.<name>.protocols`; records with
# ``opt_in``): name -> function(panoptic GT, panoptic predictions, predicted categories,
# instance/majority cluster -> class map, workers) -> results.
_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {**cityscapes.PROTOCOLS}
EXTRA_PROTOCOLS: dict[str, Callable[..., dict[str, Any]]] = {n: _RUNNERS[n] for n in registry.OPT_IN_PROTOCOLS}


def default_settings() -> dict[str, Any]:
    """Protocol parameters (config.yaml `evaluate` mirrors these)."""
    return {
        "majority": {"min_score": 0.6, "min_iou": 0.7, "iou_type": "bbox", "include_crowd": True},
        "hungarian": {"min_score": 0.0, "min_iou": 0.5, "iou_type": "bbox", "include_crowd": False},
        "semantic_vote_iou": 0.15,
        "max_dets": 100,
        "pq_crowd_rule": "last",
        "workers": 1,
    }


def _describe(key: str, params: dict[str, Any] | None = None, **kw: Any) -> str:
    return registry.PROTOCOLS[key].describe(**(params or {}), **kw)


def _instance_protocols(gt: dict[str, Any], dets: list[dict[str, Any]], extra_clusters: list[int],
                        settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[int, int]]]:
    """Majority and Hungarian cluster-matched AP; returns (results, {majority, hungarian, hungarian_fp})."""
    class_ids = sorted(int(c["id"]) for c in gt["categories"])
    names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
    cluster_ids = sorted({int(d["category_id"]) for d in dets} | set(extra_clusters))
    freq = instance.class_frequency(gt, class_ids)
    results: dict[str, Any] = {}
    maps: dict[str, dict[int, int]] = {}
    for rule in ("majority", "hungarian"):
        p = settings[rule]
        votes = matching.instance_votes(dets, gt, cluster_ids, class_ids, p["min_score"], p["min_iou"],
                                        p["iou_type"], p["include_crowd"])
        assign = matching.majority_assign(votes) if rule == "majority" else matching.hungarian_assign(votes)
        mapping = matching.mapping_dict(assign, cluster_ids, class_ids)
        fp_class: dict[int, int] = {}
        if rule == "hungarian":
            fallback = matching.fallback_classes(votes, freq)
            fp_class = {cluster_ids[k]: class_ids[fallback[k]] for k in range(len(cluster_ids))
                        if assign[k] < 0 and fallback[k] >= 0}
            maps["hungarian_fp"] = fp_class
        maps[rule] = mapping
        res = instance.matched(gt, dets, mapping, fp_class, settings["max_dets"])
        res = {"protocol": _describe(f"instance/{rule}", p), "params": dict(p), **res,
               "mapping": {str(k): {"class_id": v, "class": names[v],
                                    "votes": int(votes[cluster_ids.index(k), class_ids.index(v)])}
                           for k, v in mapping.items()},
               "unmapped": [k for k in cluster_ids if k not in mapping]}
        if rule == "hungarian":
            res["charged_as_fp"] = {str(k): names[v] for k, v in fp_class.items()}
        results[rule] = res
    return results, maps


def _semantic_sources(images: list[dict[str, Any]], semantic_dir: Path | None,
                      pan_preds: dict[int, tuple[str, list]] | None, stuff_label: dict[int, int]) -> tuple[dict, int]:
    """Per-image semantic prediction sources and how many images have none."""
    sources: dict[int, tuple | None] = {}
    missing = 0
    for im in images:
        iid = int(im["id"])
        src: tuple | None = None
        if semantic_dir is not None and (semantic_dir / f"{image_stem(im)}.png").is_file():
            src = ("png", str(semantic_dir / f"{image_stem(im)}.png"))
        elif pan_preds is not None and iid in pan_preds:
            src = ("panoptic", pan_preds[iid][0], pan_preds[iid][1], stuff_label)
        missing += src is None
        sources[iid] = src
    return sources, missing


def evaluate(manifest: dict[str, Any], dataset: str, model: str, instances_data: Any | None = None,
             panoptic_json: Path | None = None, panoptic_dir: Path | None = None,
             semantic_dir: Path | None = None, class_agnostic_only: bool = False, num_stuff: int = STUFF_CLUSTERS,
             settings: dict[str, Any] | None = None, extra_protocols: list[str] | None = None) -> dict[str, Any]:
    """Run every applicable protocol; returns the metrics dict (see module docstring).

    ``extra_protocols``: names in :data:`EXTRA_PROTOCOLS` (e.g. the Cityscapes ones), run after the
    others on the panoptic prediction; results under ``metrics["protocols"][name]``.
    """
    settings = {**default_settings(), **(settings or {})}
    images = manifest["images"]
    if not images:
        raise UserError("the manifest has no images to evaluate")
    image_ids = [int(im["id"]) for im in images]
    gt, gt_source = dataset_gt.manifest_instances(manifest, image_ids)  # instances json, or from panoptic GT
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in gt["images"]}
    bad = [im["id"] for im in images if sizes[int(im["id"])] != (int(im["height"]), int(im["width"]))]
    if bad:
        log.warning("%d images differ in size between manifest and GT (e.g. id %s): GT sizes used", len(bad), bad[0])
    pan_info = manifest.get("panoptic")
    pgt = (gtmod.load_panoptic(pan_info["json"], pan_info["png_dir"], image_ids) if pan_info
           else gtmod.things_only_panoptic(gt))
    metrics: dict[str, Any] = {
        "dataset": dataset, "model": model, "images": len(images),
        "ground_truth": {"instances": gt_source,
                         "panoptic": {"kind": pgt.label, "json": pan_info["json"] if pan_info else None}},
        "mappings_fitted_on": "the evaluated set itself (as U2Seg)",
        "settings": settings, "notes": [],
    }
    dets: list[dict[str, Any]] = []
    if instances_data is not None:
        dets, score_source = instance.detections_from_json(instances_data, set(image_ids))
        instance.check_detections(dets, gt)
        metrics["instance"] = {"detections": len(dets), "scores": score_source,
                               "class_agnostic": {"protocol": PROTOCOLS["instance/class_agnostic"],
                                                  **instance.class_agnostic(gt, dets, settings["max_dets"])}}
    if class_agnostic_only:
        return metrics

    pan_preds = pred_cats = None
    if panoptic_json is not None:
        pan_preds, pred_cats = panoptic.load_predictions(panoptic_json, panoptic_dir, image_ids)
        if not pred_cats:
            raise UserError(f"{panoptic_json}: the prediction json needs `categories` (isthing flags)")
    thing_cats = sorted(int(c["id"]) for c in pred_cats or [] if c.get("isthing", 0))
    stuff_cats = sorted(int(c["id"]) for c in pred_cats or [] if not c.get("isthing", 0))
    if stuff_cats and len(stuff_cats) != num_stuff:
        log.info("prediction has %d stuff categories (config says %d): using %d", len(stuff_cats), num_stuff,
                 len(stuff_cats))
        num_stuff = len(stuff_cats)
    stuff_label = {c: i + 1 for i, c in enumerate(stuff_cats)}

    maps: dict[str, dict[int, int]] = {}
    if instances_data is not None:
        res, maps = _instance_protocols(gt, dets, thing_cats, settings)
        metrics["instance"].update(res)

    # semantic: from semantic PNGs, else from the panoptic prediction
    sem_assign16 = None
    conf27 = None
    # the semantic and panoptic protocols below group GT classes by COCO super-category
    coco_classes = dataset_gt.coco_super_categories(pgt.categories)
    if not coco_classes and (semantic_dir is not None or pan_preds is not None):
        metrics["notes"].append("semantic / panoptic: skipped, the GT categories are not COCO's (their "
                                "super-categories are not COCO-Stuff-27's); instance protocols only"
                                + (", plus the dataset's own protocols" if extra_protocols else ""))
    if coco_classes and (semantic_dir is not None or pan_preds is not None):
        lut27 = gtmod.semantic_lut(pgt.categories, "cocostuff27")
        sources, missing = _semantic_sources(images, semantic_dir, pan_preds, stuff_label)
        if missing:
            log.warning("%d images have no semantic prediction: counted as unlabelled", missing)
        tasks = [(pgt.sources[i], sources[i], lut27, num_stuff + 1, settings["semantic_vote_iou"]) for i in image_ids]
        conf27, votes16 = semantic.accumulate(tasks, settings["workers"])
        names = semantic.label_names(num_stuff + 1)
        s27 = semantic.stego_unsupervised_metrics(conf27)
        s27s = semantic.stego27_metrics(conf27)
        s16 = semantic.u2seg16_metrics(semantic.to_u2seg16(conf27), votes16)
        sem_assign16 = s16["assignment"]
        metrics["semantic"] = {
            "source": "semantic PNGs" if semantic_dir is not None else "panoptic prediction",
            "images_without_prediction": missing,
            "stego27": {"protocol": PROTOCOLS["semantic/stego27"],
                        **{k: v for k, v in s27.items() if k != "assignment"},
                        "mapping": {names[r]: gtmod.COCOSTUFF27_NAMES[c] for r, c in enumerate(s27["assignment"]) if c >= 0}},
            "stego27_strict": {"protocol": PROTOCOLS["semantic/stego27_strict"],
                               **{k: v for k, v in s27s.items() if k != "assignment"},
                               "mapping": {names[r]: gtmod.COCOSTUFF27_NAMES[c]
                                           for r, c in enumerate(s27s["assignment"]) if c >= 0}},
            "u2seg16": {"protocol": _describe("semantic/u2seg16", vote_iou=settings["semantic_vote_iou"]),
                        **{k: v for k, v in s16.items() if k != "assignment"},
                        "mapping": {names[r]: gtmod.U2SEG16_NAMES[c] for r, c in enumerate(s16["assignment"]) if c >= 0}},
        }
        if pgt.kind == "things_only":
            # with one GT class (things) and every stuff label unmapped the 16-class numbers are void
            metrics["semantic"]["u2seg16"] = {"protocol": metrics["semantic"]["u2seg16"]["protocol"],
                                              "skipped": "needs stuff GT (COCO panoptic annotations)"}
            metrics["notes"].append("semantic: things-only GT, stuff pixels unlabelled (ignored); stego27 scores "
                                    "the 12 thing super-categories only, u2seg16 is skipped")

    if pan_preds is not None and instances_data is not None and coco_classes:
        metrics["panoptic"] = _panoptic_protocols(pgt, pan_preds, thing_cats, stuff_cats, maps, sem_assign16,
                                                  conf27, settings["workers"], settings["pq_crowd_rule"])
        if pgt.kind == "things_only":
            metrics["notes"].append("panoptic: things-only GT (rasterised instances, smaller on top, crowd as "
                                    "crowd, unlabelled pixels VOID): predicted stuff segments are not scored")
    elif pan_preds is not None and coco_classes:
        metrics["notes"].append("panoptic: skipped (needs instance predictions for the thing mapping)")
    for name in extra_protocols or []:
        if name not in EXTRA_PROTOCOLS:
            raise UserError(f"unknown evaluation protocol {name!r} (known: {', '.join(EXTRA_PROTOCOLS)})")
        if pan_preds is None:
            raise UserError(f"protocol {name} needs a panoptic prediction (panoptic.json + PNGs)")
        metrics.setdefault("protocols", {})[name] = EXTRA_PROTOCOLS[name](
            pgt, pan_preds, pred_cats or [], maps.get("majority", {}), settings["workers"])
    return metrics


def _panoptic_protocols(pgt: gtmod.PanopticGT, pan_preds: dict, thing_cats: list[int], stuff_cats: list[int],
                        maps: dict[str, dict[int, int]], sem_assign16: np.ndarray | None,
                        conf27: np.ndarray | None, workers: int, crowd_rule: str = "last") -> dict[str, Any]:
    eval_cats, gt_map = gtmod.u2seg_panoptic_categories(pgt.categories)
    has_stuff = any(not c.isthing for c in eval_cats)
    names = {c.id: c.name for c in eval_cats}
    base = gtmod.STUFF_SUPERCATEGORY_ID_BASE
    out: dict[str, Any] = {"ground_truth": pgt.label,
                           "categories": {"things": sum(c.isthing for c in eval_cats),
                                          "stuff": sum(not c.isthing for c in eval_cats)},
                           "crowd_rule": f"{crowd_rule}: {panoptic.CROWD_RULES.get(crowd_rule, '?')}"}
    known = thing_cats + stuff_cats  # the prediction json's categories; others raise
    # u2seg: majority things, u2seg16 stuff, unmapped VOID
    pred_map = {k: v for k, v in maps.get("majority", {}).items() if k in thing_cats}
    stuff_map: dict[int, int] = {}
    if has_stuff and sem_assign16 is not None:
        stuff_map = {c: base + int(sem_assign16[i + 1]) for i, c in enumerate(stuff_cats) if sem_assign16[i + 1] > 0}
    res = panoptic.pq_compute(pgt.sources, pan_preds, eval_cats, gt_map, {**pred_map, **stuff_map},
                              merge_stuff=False, workers=workers, pred_categories=known, crowd_rule=crowd_rule)
    out["u2seg"] = {"protocol": PROTOCOLS["panoptic/u2seg"], **res,
                    "stuff_mapping": {str(k): names[v] for k, v in stuff_map.items()}}
    # hungarian: strict
    pred_map = {k: v for k, v in maps.get("hungarian", {}).items() if k in thing_cats}
    forced = {k: v for k, v in maps.get("hungarian_fp", {}).items() if k in thing_cats}
    stuff_map, stuff_fp = {}, {}
    if has_stuff and conf27 is not None and stuff_cats:
        conf16 = semantic.to_u2seg16(conf27)[1:len(stuff_cats) + 1, 1:semantic.N16]  # stuff labels x stuff classes
        assign = matching.hungarian_assign(conf16)
        fallback = matching.fallback_classes(conf16, conf16.sum(axis=0))
        for i, c in enumerate(stuff_cats):
            if assign[i] >= 0:
                stuff_map[c] = base + 1 + int(assign[i])
            elif fallback[i] >= 0:
                stuff_fp[c] = base + 1 + int(fallback[i])
    res = panoptic.pq_compute(pgt.sources, pan_preds, eval_cats, gt_map, {**pred_map, **stuff_map},
                              forced_fp={**forced, **stuff_fp}, merge_stuff=True, workers=workers,
                              pred_categories=known, crowd_rule=crowd_rule)
    out["hungarian"] = {"protocol": PROTOCOLS["panoptic/hungarian"], **res,
                        "stuff_mapping": {str(k): names[v] for k, v in stuff_map.items()},
                        "charged_as_fp": {str(k): names.get(v, str(v)) for k, v in {**forced, **stuff_fp}.items()}}
    return out


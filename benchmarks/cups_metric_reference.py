"""Record CUPS's own metric on synthetic Cityscapes cases (fidelity fixture of ``cityscapes/cups27`` / ``cups19``).

CUPS (visinf/cups 78fc273) is NOT part of this repository. Run by hand, outside the test suite:
    PYTHONPATH=/path/to/torchmetrics-1.3.1-libs:/path/to/cups-shims:/path/to/cups:workflow \\
        python benchmarks/cups_metric_reference.py --out tests/evaluation/data/cups_metric
It draws the synthetic cases below (each isolating one rule where CUPS's metric differs from a
one-to-one / panopticapi evaluation, plus random mixed cases), converts each to CUPS's inputs exactly
as CUPS builds them (GT: class index or 255 per pixel, instance 0 for stuff and crowd; prediction:
pseudo-class index, stuff pseudo-classes first, instance 1..N for thing segments, 255 for VOID), runs
``cups.metrics.PanopticQualitySemanticMatching`` (``ADHERE_THING_STUFF`` on = CUPS's default, and off)
against the 27 and the 19 classes, and writes ``inputs.npz`` (segment-id maps) + ``reference.json``
(the cases' segments and CUPS's outputs). ``tests/evaluation/test_cups_metric.py`` runs the project's
protocols on the same inputs. With ``--compare`` it also prints the project's values next to CUPS's;
``--sweep N`` only compares the two on N random cases (seeds 100..), writing nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

H, W = 32, 48
LABELS = list(range(7, 34))  # Cityscapes label ids 7..33
THING_LABELS = list(range(24, 34))
STUFF_LABELS = [x for x in LABELS if x not in THING_LABELS]
TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
            27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _gt_image(rng: np.random.Generator, stuff: list[int], things: list[int], crowd: float,
              void_cells: int) -> tuple[np.ndarray, list[list[int]]]:
    """(segment ids, [[id, label id, iscrowd], ...]): 8x8 stuff cells, thing rectangles on top."""
    labels = np.zeros((H, W), np.int64)
    for y in range(0, H, 8):
        for x in range(0, W, 8):
            labels[y:y + 8, x:x + 8] = rng.choice(stuff)
    ids = labels.copy()  # stuff segment id = label id (as cityscapesScripts)
    n_inst = 0
    for _ in range(int(rng.integers(3, 7))):
        lab = int(rng.choice(things))
        h, w = int(rng.integers(4, 12)), int(rng.integers(4, 14))
        y, x = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
        if rng.random() < crowd:
            ids[y:y + h, x:x + w] = lab  # crowd region: label id without instance
        else:
            n_inst += 1
            ids[y:y + h, x:x + w] = lab * 1000 + n_inst
    for _ in range(void_cells):
        y, x = int(rng.integers(0, H - 6)), int(rng.integers(0, W - 6))
        ids[y:y + 6, x:x + 6] = 0
    segs = []
    for v in np.unique(ids).tolist():
        if v:
            lab = v // 1000 if v >= 1000 else v
            segs.append([v, lab, int(lab in THING_LABELS and v < 1000)])
    return ids, segs


def _pred_image(rng: np.random.Generator, gt_ids: np.ndarray, gt_segs: list[list[int]], perm: dict[int, int],
                thing_cats: set[int], cats: list[int], noise: int, void_pred: int, split_stuff: bool,
                shift: tuple[int, int]) -> tuple[np.ndarray, list[list[int]]]:
    """(segment ids, [[id, category id], ...]): GT label -> pseudo-class ``perm``, shifted, noisy."""
    lab_of = {s[0]: s[1] for s in gt_segs}
    gt_lab = np.vectorize(lambda v: lab_of.get(v, 0))(gt_ids)
    gt_lab = np.roll(gt_lab, shift, axis=(0, 1))
    gt_ids = np.roll(gt_ids, shift, axis=(0, 1))
    cat = np.vectorize(lambda v: perm.get(v, -1))(gt_lab)
    cat[cat < 0] = rng.choice(cats)  # GT VOID pixels: some label
    for _ in range(noise):
        h, w = int(rng.integers(2, 9)), int(rng.integers(2, 12))
        y, x = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
        cat[y:y + h, x:x + w] = rng.choice(cats)
    inst = np.where(np.isin(cat, list(thing_cats)), gt_ids, 0)  # thing labels: one segment per GT segment
    if split_stuff:  # stuff labels: one segment per 16-column band (CUPS merges them again)
        inst = np.where(np.isin(cat, list(thing_cats)), inst, 1 + np.arange(W)[None, :] // 16)
    key = cat * 10 ** 6 + inst
    for _ in range(void_pred):
        h, w = int(rng.integers(4, 10)), int(rng.integers(4, 14))
        y, x = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
        key[y:y + h, x:x + w] = -1
    ids = np.zeros((H, W), np.int64)
    segs = []
    for i, k in enumerate(np.unique(key[key >= 0]).tolist(), start=1):
        ids[key == k] = i
        segs.append([i, k // 10 ** 6])
    return ids, segs


CASES: dict[str, dict[str, Any]] = {
    # thing / stuff pseudo-classes split as the 27 classes (10 / 17), but a thing label sits on road:
    # the joint matching gives it road, CUPS's separated matching a thing class
    "a_thing_stuff_separation": dict(seed=1, n_thing=10, n_stuff=17, swap=((24, 7),)),
    # more labels than classes (13 thing + 20 stuff): CUPS maps the leftovers to their best class
    "b_leftover_labels": dict(seed=2, n_thing=13, n_stuff=20),
    # six classes absent from the GT; their labels still predict pixels (noise)
    "c_absent_classes": dict(seed=3, n_thing=10, n_stuff=17, absent=(9, 10, 14, 29, 30, 16), noise=12),
    # crowd regions (car / person without instance id)
    "d_crowd": dict(seed=4, n_thing=10, n_stuff=17, crowd=0.5),
    # VOID predictions covering GT segments
    "e_void_prediction": dict(seed=5, n_thing=10, n_stuff=17, void_pred=4),
    # stuff labels predicted as several segments per image
    "f_split_stuff": dict(seed=6, n_thing=10, n_stuff=17, split_stuff=True),
    "mixed_1": dict(seed=11, n_thing=12, n_stuff=18, absent=(10, 30), noise=8, crowd=0.3, void_pred=2,
                    split_stuff=True, void_cells=2),
    "mixed_2": dict(seed=12, n_thing=9, n_stuff=21, absent=(15, 29), noise=15, crowd=0.2, void_pred=3,
                    void_cells=1),
}


def make_case(seed: int, n_thing: int, n_stuff: int, absent: tuple = (), noise: int = 4, crowd: float = 0.0,
              void_pred: int = 0, split_stuff: bool = False, void_cells: int = 0, swap: tuple = (),
              images: int = 3) -> dict[str, Any]:
    """Segment-id maps and segments of one synthetic case (project format)."""
    rng = np.random.default_rng(seed)
    stuff = [x for x in STUFF_LABELS if x not in absent]
    things = [x for x in THING_LABELS if x not in absent]
    thing_cats = list(range(100, 100 + n_thing))
    stuff_cats = list(range(200, 200 + n_stuff))
    perm = {lab: thing_cats[i % n_thing] for i, lab in enumerate(rng.permutation(THING_LABELS).tolist())}
    perm.update({lab: stuff_cats[i % n_stuff] for i, lab in enumerate(rng.permutation(STUFF_LABELS).tolist())})
    for lab, other in swap:  # label `lab`'s pixels predicted with `other`'s pseudo-class
        perm[lab], perm[other] = perm[other], perm[lab]
    cats = thing_cats + stuff_cats
    out: dict[str, Any] = {"gt": [], "gt_segments": [], "pred": [], "pred_segments": [],
                           "categories": [[c, int(c in thing_cats)] for c in cats]}
    for i in range(images):
        g, gs = _gt_image(rng, stuff, things, crowd, void_cells)
        shift = (int(rng.integers(0, 2)), int(rng.integers(0, 3)))
        p, ps = _pred_image(rng, g, gs, perm, set(thing_cats), cats, noise, void_pred, split_stuff, shift)
        out["gt"].append(g)
        out["gt_segments"].append(gs)
        out["pred"].append(p)
        out["pred_segments"].append(ps)
    return out


def cups_inputs(case: dict[str, Any], n: int) -> tuple[list[Any], list[Any], int, int]:
    """CUPS's (target, prediction) tensors per image and the numbers of stuff / thing pseudo-classes."""
    import torch

    cats = case["categories"]
    stuff_cats = sorted(c for c, t in cats if not t)
    thing_cats = sorted(c for c, t in cats if t)
    index = {c: i for i, c in enumerate(stuff_cats + thing_cats)}
    targets, preds = [], []
    for g, gs, p, ps in zip(case["gt"], case["gt_segments"], case["pred"], case["pred_segments"]):
        sem = np.full(g.shape, 255, np.int64)
        inst = np.zeros(g.shape, np.int64)
        for k, (sid, lab, crowd) in enumerate(gs, start=1):
            cls = lab - 7 if n == 27 else TRAIN_ID.get(lab, 255)
            sem[g == sid] = cls
            if lab in THING_LABELS and not crowd:
                inst[g == sid] = k
        psem = np.full(p.shape, 255, np.int64)
        pinst = np.zeros(p.shape, np.int64)
        for k, (sid, c) in enumerate(ps, start=1):
            psem[p == sid] = index[c]
            if c in thing_cats:
                pinst[p == sid] = k
        targets.append(torch.from_numpy(np.stack([sem, inst], -1))[None])
        preds.append(torch.from_numpy(np.stack([psem, pinst], -1))[None])
    return targets, preds, len(stuff_cats), len(thing_cats)


def run_cups(case: dict[str, Any], n: int, adhere: bool) -> dict[str, Any]:
    """CUPS's metric on one case: PQ / SQ / RQ (all, things, stuff), per-class PQ, mIoU, PixelAcc (x100)."""
    from cups.data.cityscapes import (CITYSCAPES_STUFF_CLASSES, CITYSCAPES_STUFF_CLASSES_19,
                                      CITYSCAPES_THING_CLASSES, CITYSCAPES_THING_CLASSES_19)
    from cups.metrics.panoptic_quality import PanopticQualitySemanticMatching

    things, stuffs = ((CITYSCAPES_THING_CLASSES, CITYSCAPES_STUFF_CLASSES) if n == 27
                      else (CITYSCAPES_THING_CLASSES_19, CITYSCAPES_STUFF_CLASSES_19))
    targets, preds, n_stuff, n_thing = cups_inputs(case, n)
    metric = PanopticQualitySemanticMatching(
        things=set(things), stuffs=set(stuffs), num_clusters=n_stuff + n_thing,
        things_prototype=set(range(n_stuff, n_stuff + n_thing)) if adhere else None,
        stuffs_prototype=set(range(n_stuff)) if adhere else None, cache_device="cpu")
    for t, p in zip(targets, preds):
        metric.update(p, t)
    out = metric.compute()
    names = ("pq", "sq", "rq", "pq_per_class", "sq_per_class", "rq_per_class", "pq_things", "sq_things",
             "rq_things", "pq_stuff", "sq_stuff", "rq_stuff", "miou", "pixel_acc")
    res = {k: (100 * v).tolist() for k, v in zip(names, out[:14])}
    res["assignments"] = out[14].tolist()
    return res


def ours(case: dict[str, Any], n: int, adhere: bool, strict: bool = False) -> dict[str, Any]:
    """The project's protocol on the same case (``tests/evaluation/test_cups_metric.py`` does the same)."""
    import tempfile

    from u2seg import atomic
    from u2seg.coco_format import id2rgb
    from u2seg.evaluation import cityscapes
    from u2seg.evaluation.gt import load_panoptic

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt_json = write_case(case, tmp, atomic, id2rgb)
        pgt = load_panoptic(gt_json, tmp, range(1, len(case["gt"]) + 1))
        preds = {i + 1: (str(tmp / f"pred_{i}.png"), [{"id": s, "category_id": c} for s, c in ps])
                 for i, ps in enumerate(case["pred_segments"])}
        cats = [{"id": c, "isthing": t} for c, t in case["categories"]]
        run = cityscapes.cups_strict(n) if strict else cityscapes.cups(n, adhere)
        return run(pgt, preds, cats, {})


def write_case(case: dict[str, Any], folder: Path, atomic: Any, id2rgb: Any) -> Path:
    """GT panoptic json + PNGs and predicted PNGs of a case in ``folder``."""
    from u2seg.evaluation.cityscapes import LABELS_27

    anns = []
    for i, (g, gs) in enumerate(zip(case["gt"], case["gt_segments"])):
        atomic.save_png(folder / f"gt_{i}.png", id2rgb(np.asarray(g)))
        anns.append({"image_id": i + 1, "file_name": f"gt_{i}.png", "segments_info": [
            {"id": s, "category_id": lab, "iscrowd": c, "area": int((np.asarray(g) == s).sum())} for s, lab, c in gs]})
    for i, p in enumerate(case["pred"]):
        atomic.save_png(folder / f"pred_{i}.png", id2rgb(np.asarray(p)))
    cats = [{"id": i, "name": name, "supercategory": c, "isthing": int(t)} for i, name, _, c, t in LABELS_27]
    gt_json = folder / "gt.json"
    atomic.write_json(gt_json, {"images": [{"id": i + 1, "file_name": f"{i}.png", "height": H, "width": W}
                                           for i in range(len(case["gt"]))], "annotations": anns, "categories": cats})
    return gt_json


def sweep(count: int) -> int:
    """Compare the project's cups27 / cups19 with CUPS's code on ``count`` random cases (nothing written)."""
    from u2seg.evaluation.cityscapes import class_set

    worst_pq = worst_sem = 0.0
    bad = runs = 0
    for seed in range(100, 100 + count):
        rng = np.random.default_rng(seed)
        n_thing = int(rng.integers(4, 15))
        params = dict(seed=seed, n_thing=n_thing, n_stuff=max(27 - n_thing, int(rng.integers(12, 24))),
                      absent=tuple(int(x) for x in rng.choice(LABELS, int(rng.integers(0, 6)), replace=False)),
                      noise=int(rng.integers(0, 16)), crowd=float(rng.random() * 0.5),
                      void_pred=int(rng.integers(0, 5)), split_stuff=bool(rng.random() < 0.5),
                      void_cells=int(rng.integers(0, 3)), images=int(rng.integers(1, 4)))
        case = make_case(**params)
        order = sorted(c for c, t in case["categories"] if not t) + sorted(c for c, t in case["categories"] if t)
        for n in (27, 19):
            names = [c.name for c in class_set(n)]
            for adhere in (True, False):
                runs += 1
                ref, mine = run_cups(case, n, adhere), ours(case, n, adhere)
                same_map = mine["mapping"] == {str(k): names[a] for k, a in zip(order, ref["assignments"])}
                groups = (("all", ""), ("things", "_things"), ("stuff", "_stuff"))
                d_pq = max(abs(mine["panoptic"][g][m] - ref[m + x]) for g, x in groups for m in ("pq", "sq"))
                d_sem = max([abs(mine["semantic"][m] - ref[m]) for m in ("miou", "pixel_acc")]
                            + [abs(mine["panoptic"][g]["rq"] - ref["rq" + x]) for g, x in groups])
                worst_pq, worst_sem = max(worst_pq, d_pq), max(worst_sem, d_sem)
                if not same_map or d_pq > 1e-6 or d_sem > 2e-5:
                    bad += 1
                    print("MISMATCH", params, n, adhere, same_map, d_pq, d_sem)
    print(f"{runs} runs, {bad} mismatches; largest difference PQ / SQ {worst_pq:.1e}, "
          f"RQ / mIoU / PixelAcc {worst_sem:.1e} points")
    return int(bad > 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="fixture folder (inputs.npz, reference.json)")
    parser.add_argument("--compare", action="store_true", help="also print the project's values")
    parser.add_argument("--sweep", type=int, default=0, help="only compare on this many random cases")
    args = parser.parse_args()
    if args.sweep:
        return sweep(args.sweep)
    args.out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    record: dict[str, Any] = {"source": "visinf/cups 78fc273 cups/metrics/panoptic_quality.py, torchmetrics 1.3.1; "
                                        "benchmarks/cups_metric_reference.py", "height": H, "width": W, "cases": {}}
    for name, params in CASES.items():
        case = make_case(**params)
        for i, (g, p) in enumerate(zip(case["gt"], case["pred"])):
            arrays[f"{name}/gt/{i}"] = g.astype(np.int32)
            arrays[f"{name}/pred/{i}"] = p.astype(np.int32)
        entry: dict[str, Any] = {"params": params, "gt_segments": case["gt_segments"],
                                 "pred_segments": case["pred_segments"], "categories": case["categories"]}
        for n in (27, 19):
            for adhere in (True, False):
                key = f"cups{n}" + ("" if adhere else "_joint")
                entry[key] = run_cups(case, n, adhere)
                if args.compare:
                    mine = ours(case, n, adhere)
                    strict = ours(case, n, adhere, strict=True)
                    ref = entry[key]
                    print(f"{name:26s} {key:12s} CUPS PQ {ref['pq']:7.3f} mIoU {ref['miou']:7.3f} "
                          f"acc {ref['pixel_acc']:7.3f} | ours {mine['panoptic']['all']['pq']:7.3f} "
                          f"{mine['semantic']['miou']:7.3f} {mine['semantic']['pixel_acc']:7.3f} | strict "
                          f"{strict['panoptic']['all']['pq']:7.3f} {strict['semantic']['miou']:7.3f} "
                          f"{strict['semantic']['pixel_acc']:7.3f}")
        record["cases"][name] = entry
    np.savez_compressed(args.out / "inputs.npz", **arrays)
    (args.out / "reference.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}/inputs.npz, reference.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

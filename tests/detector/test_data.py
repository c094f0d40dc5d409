"""Dataset, augmentation, copy-paste and deterministic batches."""
from __future__ import annotations

import json

import numpy as np
import pytest

from u2seg.detector.data import (BatchConfig, IterationBatches, PseudoLabelDataset, Sample, augment, copy_paste,
                                 masks_to_boxes, output_size)
from u2seg.errors import UserError

from .synth import K, STUFF, make_dataset


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth"), n_images=3)


def _dataset(files):
    return PseudoLabelDataset(files["instances"], files["manifest"], files["semantic"], K, STUFF)


def test_dataset_loads_masks_labels_semantic(files):
    ds = _dataset(files)
    assert len(ds) == 3
    s = ds.load(0)
    assert s.image.shape == (64, 96, 3) and s.semantic.shape == (64, 96)
    assert s.masks.shape[0] == len(s.labels) == 2 and s.labels.max() < K
    assert (s.semantic[s.masks.any(0)] == 0).all()  # things are 0 in the semantic target
    assert set(np.unique(s.semantic)) <= {0, 1, 2, 255}


def test_dataset_rejects_categories_outside_k(files, tmp_path):
    data = json.loads(files["instances"].read_text())
    data["annotations"][0]["category_id"] = K + 5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(UserError, match="outside 1..K"):
        PseudoLabelDataset(bad, files["manifest"], files["semantic"], K, STUFF)


def test_output_size_follows_detectron2_rule():
    assert output_size(480, 640, 240, 1333) == (240, 320)
    assert output_size(100, 1000, 800, 1333) == (133, 1333)


def test_augment_resizes_and_keeps_targets_consistent(files):
    ds = _dataset(files)
    s = ds.load(1)
    rng = np.random.default_rng(0)
    for _ in range(4):
        a = augment(s, rng, [32, 48], 80)
        h, w = a.image.shape[:2]
        assert min(h, w) in (32, 48) or max(h, w) == 80
        assert a.masks.shape[1:] == (h, w) and a.semantic.shape == (h, w)
        assert a.masks.reshape(len(a.masks), -1).any(1).all()
        b = a.boxes
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] <= h).all()


def _sample(h, w, boxes, labels, seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((len(boxes), h, w), dtype=bool)
    for m, (x0, y0, x1, y1) in zip(masks, boxes):
        m[y0:y1, x0:x1] = True
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    sem = np.full((h, w), 3, dtype=np.uint8)
    sem[masks.any(0)] = 0
    return Sample(img, masks, np.array(labels, dtype=np.int64), sem, 1)


def test_copy_paste_keeps_masks_and_boxes_consistent():
    target = _sample(60, 80, [(0, 0, 30, 30), (40, 20, 80, 60)], [0, 1], 0)
    source = _sample(50, 50, [(5, 5, 20, 20), (25, 25, 45, 45), (0, 30, 10, 50)], [2, 1, 0], 1)
    pasted_any = False
    for seed in range(10):
        out = copy_paste(target, source, np.random.default_rng(seed), 0.3, 1.0)
        n_new = len(out.labels) - len(target.labels)
        assert out.masks.shape == (len(out.labels), 60, 80)
        assert out.masks.reshape(len(out.labels), -1).any(1).all()  # no empty instance
        assert np.array_equal(out.boxes, masks_to_boxes(out.masks))
        if n_new <= 0:
            continue
        pasted_any = True
        pasted = out.masks[-n_new:].any(0)
        # pasted pixels are visible on top: older masks lost them, semantic says "thing"
        assert not (out.masks[:-n_new] & pasted[None]).any()
        assert (out.semantic[pasted] == 0).all()
        assert not np.array_equal(out.image[pasted], target.image[pasted])
        assert np.array_equal(out.image[~pasted], target.image[~pasted])
        assert set(out.labels[-n_new:]) <= {0, 1, 2}
    assert pasted_any


def test_copy_paste_drops_objects_that_hide_a_target():
    target = _sample(40, 40, [(0, 0, 40, 40)], [0], 0)  # one object covering the whole image
    source = _sample(40, 40, [(0, 0, 40, 40), (0, 0, 40, 40)], [1, 2], 1)
    out = copy_paste(target, source, np.random.default_rng(0), 1.0, 1.0)
    assert len(out.labels) == 1 and np.array_equal(out.image, target.image)


def test_iteration_batches_are_deterministic_and_split_by_rank(files):
    ds = _dataset(files)
    cfg = BatchConfig(batch_size=2, seed=3, min_sizes=[32, 48], max_size=96, copy_paste=True)
    a, b = IterationBatches(ds, cfg), IterationBatches(ds, cfg)
    for it in (0, 5):
        x, y = a[it], b[it]
        assert len(x) == 2
        for s, t in zip(x, y):
            assert np.array_equal(s.image, t.image) and np.array_equal(s.masks, t.masks)
    # every image appears once per epoch of the seeded order
    order = [i for it in range(3) for i in a.indices(it)]
    assert sorted(order[:3]) == [0, 1, 2]
    r0, r1 = IterationBatches(ds, cfg, 0, 2), IterationBatches(ds, cfg, 1, 2)
    assert [s.image_id for s in r0[4] + r1[4]] == [ds.images[i]["id"] for i in a.indices(4)]


def test_image_without_instances_trains_as_background(files, tmp_path):
    data = json.loads(files["instances"].read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    path = tmp_path / "some_empty.json"
    path.write_text(json.dumps(data))
    ds = PseudoLabelDataset(path, files["manifest"], files["semantic"], K, STUFF)
    s = ds.load(1)
    assert s.masks.shape == (0, 64, 96) and s.labels.shape == (0,) and s.boxes.shape == (0, 4)
    cfg = BatchConfig(batch_size=3, seed=0, min_sizes=[32], max_size=64, copy_paste=True)
    batch = IterationBatches(ds, cfg)[0]
    assert len(batch) == 3 and all(b.masks.shape[1:] == b.image.shape[:2] for b in batch)

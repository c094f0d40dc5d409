"""STEGO loss, sampling, cluster probe, crops / kNN, training (resume) on hand-computed tensors."""
from __future__ import annotations

import logging
import math
import shutil

import numpy as np
import pytest
import torch

from u2seg.pseudo.stuff.stego.model import (ClusterProbe, StegoHead, StegoLossParams, StegoStuffModel, correspondence_loss,
                                crop_descriptors, derangement, five_crop_boxes, knn_partners, knn_table,
                                pair_loss, sample_points)
from u2seg.pseudo.stuff.model import stuff_map
from u2seg.pseudo.stuff.registry import load_stuff_model
from u2seg.pseudo.stuff.stego.train import CropStore, StegoTrainParams, step_batch, train_stego


def pts(*vectors):
    """(1, C, P) point set from P vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T[None]


# ------------------------------------------------------------------------------------ pair loss
FA, FB = pts([1, 0], [0, 1]), pts([1, 0], [1, 0])  # F = [[1, 1], [0, 0]]
CA, CB = pts([1, 0], [0, 1]), pts([2, 0], [-1, 0])  # S = [[1, -1], [0, 0]]


def test_pair_loss_pointwise_centring_and_clamp():
    # pointwise: rows centred -> 0, plus the batch mean 0.5 -> F' = 0.5 everywhere;
    # clamp(S, 0) = [[1, 0], [0, 0]]; shift 0.2: only (0, 0) contributes -(1)(0.5 - 0.2) = -0.3
    loss, cd = pair_loss(FA, FB, CA, CB, 0.2)
    assert torch.allclose(cd, torch.tensor([[[1.0, -1.0], [0.0, 0.0]]]))
    assert torch.allclose(loss, torch.tensor([[[-0.3, 0.0], [0.0, 0.0]]]), atol=1e-7)
    assert math.isclose(float(loss.mean()), -0.075, abs_tol=1e-7)


def test_pair_loss_without_pointwise_shift_and_clamp_variants():
    no_pw, _ = pair_loss(FA, FB, CA, CB, 0.2, pointwise=False)  # -(1)(1 - 0.2) at (0, 0)
    assert math.isclose(float(no_pw.mean()), -0.8 / 4, abs_tol=1e-7)
    # no zero clamp: (0, 1) adds -(-1)(0.5 - 0.2) = +0.3, cancelling (0, 0)
    unclamped, _ = pair_loss(FA, FB, CA, CB, 0.2, zero_clamp=False)
    assert math.isclose(float(unclamped.mean()), 0.0, abs_tol=1e-7)
    stab, _ = pair_loss(FA, FB, CA, CB, 0.2, stabilize=True)  # S capped at 0.8
    assert math.isclose(float(stab.mean()), -0.8 * 0.3 / 4, abs_tol=1e-7)
    shifted, _ = pair_loss(FA, FB, CA, CB, 0.5)  # F' - shift = 0 -> no loss at all
    assert float(shifted.abs().max()) == 0.0


def test_pair_loss_gradient_reaches_only_positive_code_correlations():
    ca, cb = CA.clone().requires_grad_(True), CB.clone().requires_grad_(True)
    fa = FA.clone().requires_grad_(True)
    loss, _ = pair_loss(fa, FB, ca, cb, 0.2)
    loss.mean().backward()
    assert fa.grad is None  # the feature correlation is a constant target
    # point 1 of a has S = 0 with both b points (clamped at 0 from S=0, F'-shift>0): no gradient;
    # point 0 has S=1 with b0 (maximal: gradient tangent to the sphere is 0) and S=-1 with b1 (clamped)
    assert torch.allclose(ca.grad, torch.zeros_like(ca.grad), atol=1e-7)
    ca2 = pts([1, 1], [0, 1]).requires_grad_(True)  # S(a0, b0) = cos 45 > 0: a real gradient
    pair_loss(FA, FB, ca2, cb.detach(), 0.2)[0].mean().backward()
    assert float(ca2.grad[0, :, 0].abs().sum()) > 0 and float(ca2.grad[0, :, 1].abs().sum()) == 0


# ------------------------------------------------------------------------------------- sampling
def test_sample_points_bilinear_align_corners_border():
    maps = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    coords = torch.tensor([[[-1, -1], [1, 1], [0, 0], [1, -1], [2, 2], [-0.5, 1]]], dtype=torch.float32)
    got = sample_points(maps, coords)[0, 0].tolist()
    # (x, y): corners are patch centres; (0, 0) = between rows 0 and 1 at column 1; outside = border
    assert got == pytest.approx([0.0, 5.0, 2.5, 2.0, 5.0, 3.5])


# ------------------------------------------------------------------------------ the three pairs
def constant_maps(vectors, h=3, w=4):
    return torch.tensor(vectors, dtype=torch.float32)[:, :, None, None].expand(-1, -1, h, w).contiguous()


def test_correspondence_loss_pair_kinds_by_hand():
    # image 0: feature e0, code e0; image 1: feature e1, code (e0 + e1)/sqrt2 (cos 45 deg with image 0)
    feats = constant_maps([[1, 0], [0, 1]])
    code = constant_maps([[1, 0], [1, 1]])
    feats_pos, code_pos = feats.flip(0), code.flip(0)  # each image's kNN partner is the other one
    p = StegoLossParams(pointwise=False, feature_samples=3, neg_samples=2)
    g = torch.Generator().manual_seed(0)
    c1, c2 = torch.rand(2, 9, 2, generator=g) * 2 - 1, torch.rand(2, 9, 2, generator=g) * 2 - 1
    perm = torch.tensor([1, 0])
    t = correspondence_loss(feats, feats_pos, code, code_pos, p, c1, c2, [perm, perm])
    cos45 = 1 / math.sqrt(2)
    assert float(t.self_loss) == pytest.approx(-(1 - 0.12))  # F = S = 1 with itself
    assert float(t.knn_loss) == pytest.approx(-cos45 * (0 - 0.20))  # F = 0 with the partner, S = cos 45
    assert float(t.rand_loss) == pytest.approx(-cos45 * (0 - 1.0))  # shift 1 pushes S down
    expect = 1.0 * float(t.knn_loss) + 0.1 * float(t.self_loss) + 0.1538476246415498 * float(t.rand_loss)
    assert float(t.total) == pytest.approx(expect)
    # the random partner is feats[perm] at coords2: with an identity "permutation" it equals the self pair
    # at shift 1 (F = S = 1): -(1)(1 - 1) = 0
    ident = correspondence_loss(feats, feats_pos, code, code_pos, p, c1, c2, [torch.tensor([0, 1])])
    assert float(ident.rand_loss) == pytest.approx(0.0)


def test_derangement_has_no_fixed_points():
    g = torch.Generator().manual_seed(3)
    for n in (2, 3, 5, 32):
        for _ in range(20):
            perm = derangement(n, g)
            assert perm.shape == (n,) and bool((perm != torch.arange(n)).all())
            assert int(perm.min()) >= 0 and int(perm.max()) < n


# -------------------------------------------------------------------------------- cluster probe
def test_cluster_probe_hard_and_soft_loss():
    probe = ClusterProbe(2, 2)
    with torch.no_grad():
        probe.clusters.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # normalised: e0, e1
    code = torch.tensor([[3.0, 1.0], [4.0, 0.0]])[None, :, None, :]  # points (3, 4) and (1, 0)
    assert probe.loss(code).item() == pytest.approx(-(0.8 + 1.0) / 2)
    soft = [(math.exp(1.2) * 0.6 + math.exp(1.6) * 0.8) / (math.exp(1.2) + math.exp(1.6)),
            (math.exp(2.0) * 1.0 + 1.0 * 0.0) / (math.exp(2.0) + 1.0)]
    assert probe.loss(code, alpha=2.0).item() == pytest.approx(-sum(soft) / 2)


# --------------------------------------------------------------------------------- crops and kNN
def test_five_crop_boxes_match_torchvision_five_crop():
    import torchvision.transforms.functional as TF

    x = torch.arange(30 * 28, dtype=torch.float32).reshape(1, 30, 28)
    boxes = five_crop_boxes(30, 28)
    ref = TF.five_crop(x, [15, 14])
    for (t, l, ch, cw), r in zip(boxes, ref):
        assert torch.equal(x[:, t:t + ch, l:l + cw], r)


def test_knn_table_self_first_and_cosine_order():
    desc = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [1, 0]], dtype=np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    nns = knn_table(desc, k=3, chunk=2)
    assert nns.shape == (5, 3)
    assert nns[:, 0].tolist() == [0, 1, 2, 3, 4]  # self at rank 0, even with the duplicate 0 == 4
    assert set(nns[0, 1:].tolist()) == {4, 1} and set(nns[2, 1:].tolist()) == {3, 1}
    picks = knn_partners(nns, np.array([0] * 200), 2, np.random.default_rng(0))
    assert set(picks.tolist()) == {4, 1}  # ranks 1..num_neighbors only, never self
    d = crop_descriptors(np.ones((3, 4, 4), dtype=np.float32), five_crop_boxes(4, 4))
    assert d.shape == (5, 3) and np.allclose(np.linalg.norm(d, axis=1), 1)


def test_step_batches_are_shuffled_epochs():
    seen = np.concatenate([step_batch(s, 10, 4, seed=0) for s in range(3)])  # 4 + 4 + 2
    assert sorted(seen.tolist()) == list(range(10))
    assert len(step_batch(3, 10, 4, seed=0)) == 4  # next epoch


# ------------------------------------------------------------------------------------- training
def two_material_store(n_images=6, c=8, h=8, w=8):
    rng = np.random.default_rng(0)
    maps = []
    for i in range(n_images):
        d = rng.normal(0, 0.1, size=(c, h, w)).astype(np.float32)
        d[0, :, : w // 2] += 2.0  # left: material A
        d[1 + i % 2, :, w // 2:] += 2.0  # right: material B or C
        maps.append(d)
    boxes = [(0, 0, h, w)]
    nns = knn_table(np.concatenate([crop_descriptors(m, boxes) for m in maps]), k=4)
    return CropStore(n_images, lambda i: maps[i], boxes), nns, maps


def small_params(steps, cluster_lr=5e-3):
    return StegoTrainParams(dim=5, k=3, batch_size=4, max_steps=steps, num_neighbors=2, checkpoint_period=3,
                            log_period=1, cluster_lr=cluster_lr, loss=StegoLossParams(feature_samples=5, neg_samples=2))


def test_training_lowers_the_loss_and_separates_materials():
    store, nns, maps = two_material_store()
    model, history = train_stego(store, nns, 8, small_params(80, cluster_lr=0.05), torch.device("cpu"))
    first = np.mean([r["corr"] for r in history[:5]])
    last = np.mean([r["corr"] for r in history[-5:]])
    assert last < first
    labels = model.predict(maps[0])
    assert len(set(labels[:, :4].ravel().tolist())) == 1  # one material, one cluster
    assert labels[0, 0] != labels[0, 7]


def test_training_resumes_exactly(tmp_path):
    store, nns, _ = two_material_store()
    straight, hist_a = train_stego(store, nns, 8, small_params(6), torch.device("cpu"))
    work = tmp_path / "work"
    train_stego(store, nns, 8, small_params(3), torch.device("cpu"), work)  # "interrupted" after 3 steps
    resumed, hist_b = train_stego(store, nns, 8, small_params(6), torch.device("cpu"), work)
    for a, b in zip(straight.head.state_dict().values(), resumed.head.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(straight.probe.clusters, resumed.probe.clusters, atol=1e-6)
    assert [r["step"] for r in hist_b] == list(range(1, 7))
    other = StegoTrainParams(dim=6, k=3, batch_size=4, max_steps=6, checkpoint_period=3)
    _, hist_c = train_stego(store, nns, 8, other, torch.device("cpu"), work)  # other settings: from scratch
    assert [r["step"] for r in hist_c] == [6]  # its own log_period (10): not the old history 1..6


def _trained_head(model) -> list[torch.Tensor]:
    return [v.clone() for v in model.head.state_dict().values()] + [model.probe.clusters.detach().clone()]


def test_training_resumes_only_from_the_same_maps_knn_and_settings(tmp_path, caplog):
    """A changed map, kNN table or setting starts fresh (one log line naming it); else it resumes."""
    store, nns, maps = two_material_store()
    work = tmp_path / "work"
    base, _ = train_stego(store, nns, 8, small_params(3), torch.device("cpu"), work)
    with caplog.at_level(logging.INFO, logger="u2seg.pseudo.stuff.stego.train"):
        _, hist = train_stego(store, nns, 8, small_params(3), torch.device("cpu"), work)
    assert "from scratch" not in caplog.text and "resuming at step 3" in caplog.text
    maps2 = [m.copy() for m in maps]
    maps2[4][0] += 1.0  # one image's features changed (another backbone / image)
    store2 = CropStore(len(maps2), lambda i: maps2[i], store.boxes)
    nns2 = nns.copy()
    nns2[:, 1:] = nns2[:, 1:][:, ::-1]  # other neighbours for every crop
    cases = {"features": (store2, nns, small_params(3)), "knn_table": (store, nns2, small_params(3)),
             "settings": (store, nns, small_params(3, cluster_lr=0.01))}
    for part, (s, n, params) in cases.items():
        run = tmp_path / part
        shutil.copytree(work, run)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="u2seg.pseudo.stuff.stego.train"):
            model, hist = train_stego(s, n, 8, params, torch.device("cpu"), run)
        fresh = [r.getMessage() for r in caplog.records if "from scratch" in r.getMessage()]
        assert len(fresh) == 1 and f"{part} changed" in fresh[0], caplog.text
        assert [r["step"] for r in hist] == [1, 2, 3]
        assert any(not torch.equal(a, b) for a, b in zip(_trained_head(base), _trained_head(model))), part


def test_stego_model_save_load_and_upsampled_maps(tmp_path):
    torch.manual_seed(0)
    model = StegoStuffModel(StegoHead(8, 5), ClusterProbe(5, 3))
    dense = np.random.default_rng(1).normal(size=(8, 4, 6)).astype(np.float32)
    model.save(tmp_path / "m.npz")
    back = load_stuff_model(tmp_path / "m.npz")
    assert back.kind == "stego" and back.num_classes == 3
    assert np.allclose(back.scores(dense), model.scores(dense), atol=1e-6)
    full = back.upsampled_scores(dense, 20, 30)
    assert full.shape == (3, 20, 30)
    m = stuff_map(back, dense, 20, 30)
    assert m.shape == (20, 30) and m.dtype == np.uint8 and np.array_equal(m, full.argmax(0))
    with pytest.raises(ValueError, match="channels"):
        back.scores(dense[:4])

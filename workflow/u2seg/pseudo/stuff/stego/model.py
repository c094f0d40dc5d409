"""STEGO's segmentation head, correspondence-distillation loss and cluster probe (docs/method.md §5).

Every formula and constant follows STEGO (Hamilton et al., ICLR 2022; mhamilton723/STEGO at eb4d6b5,
``src/modules.py`` and ``src/train_segmentation.py``, paraphrased in method §5.1-§5.8); the
code is written for this project. Differences from the reference, all forced by training on the
dense features already stored in the feature shards (no backbone forward pass during training):

* a "five crop" is a crop of the stored dense map (corners + centre, half the height and width),
  not a re-encoded JPEG crop fed through the backbone;
* the kNN descriptor is the spatial mean of a crop's dense features (STEGO: of its patch tokens),
  computed without dropout (STEGO's precompute leaves dropout on, a bug, method §5.8, item 1);
* no flip test-time augmentation (a flipped image's features are not in the shards).

Shapes: dense maps are (B, C, h, w); a code map is (B, D, h, w); sampled points are (B, C, P).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from u2seg.params import STUFF_CLUSTERS
from u2seg.pseudo.stuff.model import StuffModel
from u2seg.pseudo.stuff.stego.params import StegoLossParams

#: STEGO's normalisation epsilon (``F.normalize(t, dim=1, eps=1e-10)``, modules.py ``norm``).
NORM_EPS = 1e-10


# ----------------------------------------------------------------------------------------- head
class StegoHead(nn.Module):
    """code = W_lin . drop(f) + W_3 . ReLU(W_2 . drop(f)), all 1x1 convolutions with bias.

    In train mode ``forward`` also returns the correlation target drop(f) with a third, independent
    Dropout2d mask (STEGO ``dropout: True``); in eval mode dropout is off and the target is f.
    """

    def __init__(self, in_channels: int, dim: int = 90, dropout: float = 0.1, nonlinear: bool = True,
                 dropout_target: bool = True):
        super().__init__()
        self.in_channels = int(in_channels)
        self.dim = int(dim)
        self.dropout = nn.Dropout2d(p=dropout)
        self.dropout_target = bool(dropout_target)
        self.linear = nn.Conv2d(in_channels, dim, 1)
        self.nonlinear = nn.Sequential(nn.Conv2d(in_channels, in_channels, 1), nn.ReLU(),
                                       nn.Conv2d(in_channels, dim, 1)) if nonlinear else None

    def code(self, feats: torch.Tensor) -> torch.Tensor:
        """The (B, D, h, w) code of (B, C, h, w) features (dropout masks drawn per branch)."""
        out = self.linear(self.dropout(feats))
        if self.nonlinear is not None:
            out = out + self.nonlinear(self.dropout(feats))
        return out

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(correlation target, code)."""
        code = self.code(feats)
        target = self.dropout(feats) if self.dropout_target else feats
        return target, code


# ------------------------------------------------------------------------------------- sampling
def random_coords(batch: int, samples: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, samples*samples, 2) points uniform in [-1, 1]^2 (x, y), STEGO's feature_samples grid."""
    u = torch.rand((batch, samples * samples, 2), generator=generator, device="cpu")
    return (u * 2 - 1).to(device)


def sample_points(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (B, C, P) of (B, C, h, w) maps at (B, P, 2) coords in [-1, 1] (x, y).

    ``grid_sample`` with ``align_corners=True`` and ``padding_mode='border'`` as STEGO: -1 and +1
    are the centres of the first and last patch.
    """
    out = F.grid_sample(maps, coords[:, :, None, :].to(maps.dtype), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out[..., 0]


def normalize(t: torch.Tensor) -> torch.Tensor:
    """L2-normalise over dim 1 with STEGO's eps."""
    return F.normalize(t, dim=1, eps=NORM_EPS)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, P, Q) cosine similarities of (B, C, P) and (B, C, Q) point sets."""
    return torch.einsum("bcp,bcq->bpq", normalize(a), normalize(b))


def derangement(size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """STEGO's ``super_perm``: a random permutation whose fixed points i are moved to i+1 (mod size).

    It has no fixed point (for size >= 2) but may repeat an index (method §5.8, item 7).
    """
    perm = torch.randperm(size, generator=generator)
    perm = torch.where(perm == torch.arange(size), perm + 1, perm)
    return perm % size


# ----------------------------------------------------------------------------------------- loss
def pair_loss(feats_a: torch.Tensor, feats_b: torch.Tensor, code_a: torch.Tensor, code_b: torch.Tensor,
              shift: float, pointwise: bool = True, zero_clamp: bool = True,
              stabilize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Element losses (B, P, Q) and code correlation of one pair kind (STEGO ``helper``).

    F = cos(f_a(p), f_b(q)) without gradient; pointwise: F - mean_q F + mean(F) (mean over the whole
    batch tensor); S = cos(s_a(p), s_b(q)); loss = -clamp(S, 0[, 0.8]) * (F - shift).
    """
    with torch.no_grad():
        fd = correlation(feats_a, feats_b)
        if pointwise:
            batch_mean = fd.mean()
            fd = fd - fd.mean(dim=2, keepdim=True)
            fd = fd - fd.mean() + batch_mean
    cd = correlation(code_a, code_b)
    low = 0.0 if zero_clamp else -9999.0
    clamped = cd.clamp(low, 0.8) if stabilize else cd.clamp(min=low)
    return -clamped * (fd - shift), cd


@dataclass
class CorrespondenceTerms:
    """Mean losses of the three pair kinds and their weighted sum."""

    self_loss: torch.Tensor
    knn_loss: torch.Tensor
    rand_loss: torch.Tensor
    total: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {"self": self.self_loss.item(), "knn": self.knn_loss.item(), "rand": self.rand_loss.item(),
                "corr": self.total.item()}


def correspondence_loss(feats: torch.Tensor, feats_pos: torch.Tensor, code: torch.Tensor,
                        code_pos: torch.Tensor, params: StegoLossParams,
                        coords1: torch.Tensor, coords2: torch.Tensor,
                        perms: list[torch.Tensor]) -> CorrespondenceTerms:
    """STEGO's correspondence distillation (ContrastiveCorrelationLoss + the weighted sum).

    ``feats``/``code``: the batch (target features, code maps); ``feats_pos``/``code_pos``: each
    image's kNN partner. ``coords1`` samples the batch, ``coords2`` the partners and the negatives;
    ``perms``: one derangement of the batch per negative draw (random partner = another batch image).
    """
    kw = dict(pointwise=params.pointwise, zero_clamp=params.zero_clamp, stabilize=params.stabilize)
    f1, c1 = sample_points(feats, coords1), sample_points(code, coords1)
    f2, c2 = sample_points(feats_pos, coords2), sample_points(code_pos, coords2)
    self_l, _ = pair_loss(f1, f1, c1, c1, params.pos_intra_shift, **kw)
    knn_l, _ = pair_loss(f1, f2, c1, c2, params.pos_inter_shift, **kw)
    neg = []
    for perm in perms:
        fn = sample_points(feats[perm], coords2)
        cn = sample_points(code[perm], coords2)
        neg.append(pair_loss(f1, fn, c1, cn, params.neg_inter_shift, **kw)[0])
    rand_l = torch.cat(neg, dim=0).mean() if neg else torch.zeros((), device=feats.device)
    self_m, knn_m = self_l.mean(), knn_l.mean()
    total = (params.pos_inter_weight * knn_m + params.pos_intra_weight * self_m
             + params.neg_inter_weight * rand_l)
    return CorrespondenceTerms(self_m, knn_m, rand_l, total)


# -------------------------------------------------------------------------------- cluster probe
class ClusterProbe(nn.Module):
    """K centroids (randn init) compared by cosine with the code (STEGO ``ClusterLookup``)."""

    def __init__(self, dim: int, k: int = STUFF_CLUSTERS):
        super().__init__()
        self.clusters = nn.Parameter(torch.randn(k, dim))

    def cosine(self, code: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) cosine of each code vector with each normalised centroid."""
        return torch.einsum("bchw,kc->bkhw", normalize(code), F.normalize(self.clusters, dim=1))

    def loss(self, code: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """-mean sum_k p_k cos_k; hard one-hot argmax assignment when ``alpha`` is None (training)."""
        cos = self.cosine(code)
        if alpha is None:
            probs = F.one_hot(cos.argmax(dim=1), cos.shape[1]).permute(0, 3, 1, 2).to(cos.dtype)
        else:
            probs = torch.softmax(cos * alpha, dim=1)
        return -(probs * cos).sum(dim=1).mean()


# -------------------------------------------------------------------------- crops and kNN table
def five_crop_boxes(h: int, w: int, ratio: float = 0.5) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of torchvision's five_crop order: TL, TR, BL, BR, centre."""
    ch, cw = max(1, int(ratio * h)), max(1, int(ratio * w))
    top_c, left_c = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return [(0, 0, ch, cw), (0, w - cw, ch, cw), (h - ch, 0, ch, cw), (h - ch, w - cw, ch, cw),
            (top_c, left_c, ch, cw)]


def crop_boxes(h: int, w: int, crop_type: str, ratio: float = 0.5) -> list[tuple[int, int, int, int]]:
    """Training crops of one (h, w) dense map: ``five`` (STEGO's five-crop) or ``none`` (whole map)."""
    if crop_type == "five":
        return five_crop_boxes(h, w, ratio)
    if crop_type == "none":
        return [(0, 0, h, w)]
    raise ValueError(f"unknown crop type {crop_type!r} (five or none)")


def crop_descriptors(dense: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """(len(boxes), C) L2-normalised spatial means of one (C, h, w) map's crops (STEGO's kNN descriptor)."""
    out = np.stack([dense[:, t:t + ch, l:l + cw].reshape(dense.shape[0], -1).mean(axis=1)
                    for t, l, ch, cw in boxes]).astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def knn_table(descriptors: np.ndarray, k: int = 30, chunk: int = 4096,
              device: torch.device | str = "cpu") -> np.ndarray:
    """(N, min(k, N)) indices of each row's most cosine-similar rows, self included (rank 0 on ties
    broken towards self), computed in row chunks (STEGO precompute_knns: topk 30)."""
    x = torch.from_numpy(np.ascontiguousarray(descriptors, dtype=np.float32)).to(device)
    n = x.shape[0]
    k = min(int(k), n)
    out = []
    for lo in range(0, n, chunk):
        sims = x[lo:lo + chunk] @ x.T
        rows = torch.arange(lo, min(lo + chunk, n), device=device)
        sims[torch.arange(len(rows), device=device), rows] = float("inf")  # self first, as STEGO's rank 0
        out.append(torch.topk(sims, k, dim=1).indices.cpu())
    return torch.cat(out).numpy().astype(np.int64)


def knn_partners(nns: np.ndarray, index: np.ndarray, num_neighbors: int,
                 rng: np.random.Generator) -> np.ndarray:
    """kNN partner of each index: ``nns[i][r]`` with r uniform in 1..num_neighbors (skips self)."""
    hi = min(int(num_neighbors), nns.shape[1] - 1)
    if hi < 1:
        return np.asarray(index).copy()  # a single image: its only "neighbour" is itself
    r = rng.integers(1, hi + 1, size=len(index))
    return nns[index, r]


# ---------------------------------------------------------------------------------- stuff model
class StegoStuffModel(StuffModel):
    """Trained STEGO head + cluster probe: labels = argmax cosine(code, centroid) (alpha 2 for the CRF)."""

    kind = "stego"

    def __init__(self, head: StegoHead, probe: ClusterProbe, meta: dict[str, Any] | None = None,
                 device: torch.device | str = "cpu"):
        self.head = head.eval().to(device)
        self.probe = probe.eval().to(device)
        self.num_classes = int(probe.clusters.shape[0])
        self.meta = dict(meta or {})
        self.device = torch.device(device)

    def fit(self, patches: Any) -> "StegoStuffModel":
        raise NotImplementedError("a STEGO head is trained by `u2seg stego train`, not fitted on patches")

    @torch.no_grad()
    def code(self, dense: np.ndarray) -> torch.Tensor:
        """(1, D, h, w) code of one (C, h, w) dense map (eval mode: no dropout)."""
        if dense.shape[0] != self.head.in_channels:
            raise ValueError(f"dense features have {dense.shape[0]} channels, the STEGO head "
                             f"{self.head.in_channels} (trained on another backbone?)")
        x = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))[None].to(self.device)
        return self.head.code(x)

    @torch.no_grad()
    def scores(self, dense: np.ndarray) -> np.ndarray:
        return self.probe.cosine(self.code(dense))[0].float().cpu().numpy()

    @torch.no_grad()
    def upsampled_scores(self, dense: np.ndarray, height: int, width: int) -> np.ndarray:
        """Cosine scores (S, height, width): the code upsampled bilinearly first, then the probe (STEGO eval)."""
        code = F.interpolate(self.code(dense), size=(height, width), mode="bilinear", align_corners=False)
        return self.probe.cosine(code)[0].float().cpu().numpy()

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {f"head.{k}": v.detach().cpu().numpy() for k, v in self.head.state_dict().items()}
        arrays["clusters"] = self.probe.clusters.detach().cpu().numpy()
        meta = dict(self.meta, in_channels=self.head.in_channels, dim=self.head.dim,
                    nonlinear=self.head.nonlinear is not None, k=self.num_classes)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   device: torch.device | str = "cpu") -> "StegoStuffModel":
        """Rebuild from :meth:`state` (``load_stuff_model``)."""
        head = StegoHead(meta["in_channels"], meta["dim"], nonlinear=meta.get("nonlinear", True))
        head.load_state_dict({k[5:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("head.")})
        probe = ClusterProbe(meta["dim"], meta["k"])
        with torch.no_grad():
            probe.clusters.copy_(torch.from_numpy(arrays["clusters"]))
        return cls(head, probe, {k: v for k, v in meta.items() if k not in ("kind",)}, device)

"""Training STEGO's head + cluster probe on crops of the stored dense maps (resumable).

One step (STEGO ``training_step`` without the supervised linear probe): a batch of B crops and one
kNN partner each (``nns[i][r]``, r uniform in 1..num_neighbors); head on both (three dropout
masks each); correspondence loss over the self, kNN and ``neg_samples`` random (in-batch
derangement) pairs; hard cluster loss on the detached code; one backward; Adam on the head (lr)
and on the probe (cluster_lr). Steps are iterations. A checkpoint (head, probe, both optimisers,
RNG states, the loss history) every ``checkpoint_period`` steps makes an interrupted run resume.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from u2seg import fingerprint as fp
from u2seg.detector import checkpoint as ckpt
from u2seg.pseudo.stuff.stego.model import (ClusterProbe, StegoHead, StegoStuffModel, correspondence_loss,
                                            derangement, knn_partners, random_coords)
from u2seg.pseudo.stuff.stego.params import StegoTrainParams

log = logging.getLogger(__name__)


class CropStore:
    """The crops of every image's dense map; ``get(indices)`` -> (B, C, ch, cw) float32 tensor.

    ``images[i]()`` returns image i's (C, h, w) map (float16/32); maps are read once and kept as
    float16 when ``preload`` (the small-dataset case), else read again on every access.
    """

    def __init__(self, n_images: int, read: Callable[[int], np.ndarray],
                 boxes: Sequence[tuple[int, int, int, int]], preload: bool = True):
        self.n_images = int(n_images)
        self.read = read
        self.boxes = list(boxes)
        self.cache: np.ndarray | None = None
        if preload:
            first = np.asarray(read(0), dtype=np.float16)
            self.cache = np.empty((self.n_images,) + first.shape, dtype=np.float16)
            self.cache[0] = first
            for i in range(1, self.n_images):
                self.cache[i] = read(i)

    def __len__(self) -> int:
        return self.n_images * len(self.boxes)

    def image(self, i: int) -> np.ndarray:
        return self.cache[i] if self.cache is not None else np.asarray(self.read(i))

    def digest(self) -> str:
        """Content digest of every map (as read: float16 when preloaded) and of the crop boxes."""
        def blocks():
            yield repr(self.boxes).encode()
            for i in range(self.n_images):
                arr = np.ascontiguousarray(self.image(i))
                yield f"{arr.dtype.str}{arr.shape}".encode()
                yield arr.tobytes()
        return fp.chunks_digest(blocks())

    def get(self, indices: np.ndarray) -> torch.Tensor:
        nb = len(self.boxes)
        out = []
        for idx in np.asarray(indices).tolist():
            t, l, ch, cw = self.boxes[idx % nb]
            out.append(np.asarray(self.image(idx // nb)[:, t:t + ch, l:l + cw], dtype=np.float32))
        return torch.from_numpy(np.stack(out))


def step_batch(step: int, n: int, batch: int, seed: int) -> np.ndarray:
    """Crop indices of step ``step``: shuffled epochs over range(n) (a last partial batch included, as
    a loader without drop_last); epoch e's order depends only on (seed, e), so a resumed run draws
    exactly the batches of an uninterrupted one."""
    per_epoch = -(-n // batch)
    epoch, j = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[j * batch:(j + 1) * batch]


def _new_state(in_channels: int, p: StegoTrainParams, device: torch.device):
    torch.manual_seed(p.seed)
    head = StegoHead(in_channels, p.dim, p.dropout, p.nonlinear, p.dropout_target).to(device)
    probe = ClusterProbe(p.dim, p.k).to(device)
    opt_head = torch.optim.Adam(head.parameters(), lr=p.lr)
    opt_probe = torch.optim.Adam(probe.parameters(), lr=p.cluster_lr)
    return head, probe, opt_head, opt_probe


def train_stego(store: CropStore, nns: np.ndarray, in_channels: int, p: StegoTrainParams,
                device: torch.device, work_dir: Path | None = None,
                progress: Callable[[int, dict[str, float]], None] | None = None
                ) -> tuple[StegoStuffModel, list[dict[str, float]]]:
    """Train for ``p.max_steps`` steps (resuming from ``work_dir`` when it holds a checkpoint).

    Returns the model and the loss history (one row every ``log_period`` steps and at the end).
    """
    n = len(store)
    if n < 2:
        raise ValueError("STEGO needs at least 2 crops (random pairs are other images of the batch)")
    if nns.shape[0] != n:
        raise ValueError(f"kNN table has {nns.shape[0]} rows, the crop store {n} crops (stale table?)")
    head, probe, opt_head, opt_probe = _new_state(in_channels, p, device)
    start, history = 0, []
    inputs: dict[str, str] = {}
    state = None
    if work_dir is not None:  # resume only from a checkpoint of the same maps, kNN table and settings
        inputs = input_fingerprint(store, nns, in_channels, p)
        state = _resumable_state(work_dir, inputs, p.max_steps)
    if state is not None:
        head.load_state_dict(state["head"])
        probe.load_state_dict(state["probe"])
        opt_head.load_state_dict(state["opt_head"])
        opt_probe.load_state_dict(state["opt_probe"])
        start, history = int(state["step"]), list(state["history"])
        ckpt.set_rng_state(state["rng"])
        log.info("stego: resuming at step %d from %s (same inputs)", start, work_dir)
    head.train()
    probe.train()
    t0 = time.perf_counter()
    acc: dict[str, float] = {}
    count = 0
    for step in range(start, p.max_steps):
        index = step_batch(step, n, min(p.batch_size, n), p.seed)
        rng = np.random.default_rng([p.seed, 1, step])  # per-step streams: resumable exactly
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        pos = knn_partners(nns, index, p.num_neighbors, rng)
        x, x_pos = store.get(index).to(device), store.get(pos).to(device)
        b = x.shape[0]
        feats, code = head(x)
        feats_pos, code_pos = head(x_pos)
        coords1 = random_coords(b, p.loss.feature_samples, gen, device)
        coords2 = random_coords(b, p.loss.feature_samples, gen, device)
        perms = [derangement(b, gen).to(device) for _ in range(p.loss.neg_samples)]
        terms = correspondence_loss(feats, feats_pos, code, code_pos, p.loss, coords1, coords2, perms)
        cluster = probe.loss(code.detach().clone())
        loss = terms.total + cluster
        opt_head.zero_grad(set_to_none=True)
        opt_probe.zero_grad(set_to_none=True)
        loss.backward()
        opt_head.step()
        opt_probe.step()
        vals = dict(terms.as_floats(), cluster=cluster.item(), total=loss.item())
        for k, v in vals.items():
            acc[k] = acc.get(k, 0.0) + v
        count += 1
        done = step + 1
        if done % p.log_period == 0 or done == p.max_steps:
            row = {"step": done, **{k: v / count for k, v in acc.items()}}
            history.append(row)
            acc, count = {}, 0
            if progress is not None:
                rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
                progress(done, dict(row, rate=rate, eta_s=(p.max_steps - done) / max(rate, 1e-9)))
        if work_dir is not None and (done % p.checkpoint_period == 0 or done == p.max_steps):
            ckpt.save_training(work_dir, done, {
                "head": head.state_dict(), "probe": probe.state_dict(), "opt_head": opt_head.state_dict(),
                "opt_probe": opt_probe.state_dict(), "step": done, "history": history,
                "rng": ckpt.rng_state(), "params": asdict(p), "inputs": inputs})
    meta = {"train": asdict(p), "steps": p.max_steps, "crops": n}
    return StegoStuffModel(head.cpu(), probe.cpu(), meta), history


def _resumable(params: dict) -> dict:
    """The settings a checkpoint must share with the run resuming it (the schedule length may grow)."""
    return {k: v for k, v in params.items() if k not in ("max_steps", "checkpoint_period", "log_period")}


def input_fingerprint(store: CropStore, nns: np.ndarray, in_channels: int, p: StegoTrainParams) -> dict[str, str]:
    """Digests of what the trained head depends on: the settings, the dense-map crops, the kNN table."""
    table = np.ascontiguousarray(nns)
    return {"settings": fp.settings_digest({"params": _resumable(asdict(p)), "in_channels": in_channels}),
            "features": store.digest(),
            "knn_table": fp.chunks_digest([f"{table.dtype.str}{table.shape}".encode(), table.tobytes()])}


def _resumable_state(work_dir: Path, inputs: dict[str, str], max_steps: int) -> dict | None:
    """The newest checkpoint of ``work_dir`` when it was made from ``inputs``; else None, with ``work_dir``
    cleared and one log line saying why."""
    last = ckpt.latest_training(work_dir)
    if last is None:
        ckpt.clear_training(work_dir)  # checkpoint files without a pointer are stale too
        return None
    state = ckpt.load(last)
    reason = fp.stale_reason(state.get("inputs"), inputs)
    if reason is None and int(state["step"]) > max_steps:
        reason = f"its step {state['step']} is past max_steps {max_steps}"
    if reason is not None:
        log.warning("stego: training from scratch, not resuming %s: %s", last, reason)
        ckpt.clear_training(work_dir)
        return None
    return state

"""Streaming Lloyd k-means (docs/method.md §4): exact Lloyd iterations over rows read one chunk at a time.

Memory is bounded by the centroids (k x d), the per-cluster sums (k x d, float64) and one chunk
(``chunk x d`` rows plus its ``chunk x k`` distance block); it does not grow with the number of rows.

* init: k distinct rows drawn with ``numpy.random.default_rng(seed)`` (one streaming pass);
* assignment: nearest centroid by squared Euclidean distance ``||x||^2 - 2 x.c + ||c||^2``
  (float32 GEMM; equal distances go to the lower cluster index, but the GEMM may round the
  distances to identical centroids differently in the last bit);
* update: mean of the members, accumulated chunk by chunk (exact Lloyd, not mini-batch);
* acceleration (``accelerate=True``, default): Hamerly's bounds, used once few labels change per
  iteration (full passes before that, and again whenever the bounds stop pruning). Each row keeps its label, an upper
  bound on the distance to its centroid and a lower bound on the distance to any other centroid;
  rows whose bounds prove the label cannot change skip the distance computation and the member
  sums are updated only for rows that change cluster. The assignments are those of plain Lloyd
  (the bounds are exact inequalities, checked with a small relative safety margin). The per-row
  state (12 bytes per row) lives in a scratch file, read and written chunk by chunk with the rows,
  so memory stays bounded;
* empty clusters: re-seeded to the rows farthest from their centroid (those rows leave their old
  cluster, as in scikit-learn); never NaN. Re-seeds are counted in the result;
* ``spherical=True``: rows and centroids are L2-normalised (cosine k-means, STEGO's cluster probe);
* stops early when an iteration changes no assignment (the centroids are then fixed, so the result
  equals running all iterations).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

# relative safety margin of the Hamerly skip test (float32 distances are not exact)
_BOUND_MARGIN = 1e-4
# pass selection (speed only): bounds after a full pass that changed at most this fraction of the
# labels; back to full passes after a bounds pass that had to recompute more than this fraction
_BOUNDS_MAX_CHANGED = 0.1
_BOUNDS_MAX_RECOMPUTED = 0.5


class RowSource(Protocol):
    """Rows of a (n_rows, dim) matrix, delivered as consecutive float32 chunks in row order."""

    n_rows: int
    dim: int

    def chunks(self) -> Iterator[np.ndarray]:
        """Yield (m, dim) float32 chunks covering rows 0..n_rows-1 in order; re-iterable.

        A chunk may be a view of a buffer that the next chunk overwrites: copy what you keep."""
        ...


class ArraySource:
    """A :class:`RowSource` over anything sliceable along axis 0 (numpy, zarr, ...)."""

    def __init__(self, array: Any, chunk_size: int = 65536):
        if len(array.shape) != 2:
            raise ValueError(f"expected a 2-D (rows, dim) array, got shape {tuple(array.shape)}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.array = array
        self.n_rows = int(array.shape[0])
        self.dim = int(array.shape[1])
        self.chunk_size = int(chunk_size)

    def chunks(self) -> Iterator[np.ndarray]:
        for start in range(0, self.n_rows, self.chunk_size):
            yield np.ascontiguousarray(self.array[start:start + self.chunk_size], dtype=np.float32)


class NpyWriter:
    """Append float32 rows to a ``.npy`` file of known shape (no memory map, constant memory)."""

    def __init__(self, path: str | Path, n_rows: int, dim: int):
        self.path = Path(path)
        self.n_rows, self.dim, self.written = int(n_rows), int(dim), 0
        self._fh = open(self.path, "wb")
        header = {"descr": np.dtype(np.float32).str, "fortran_order": False, "shape": (self.n_rows, self.dim)}
        np.lib.format.write_array_header_2_0(self._fh, header)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows must be (m, {self.dim}), got {rows.shape}")
        if self.written + len(rows) > self.n_rows:
            raise ValueError("more rows than declared")
        self._fh.write(rows.tobytes())
        self.written += len(rows)

    def close(self) -> None:
        self._fh.close()
        if self.written != self.n_rows:
            raise ValueError(f"wrote {self.written} rows, declared {self.n_rows}")

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._fh.close()


class NpyRowSource:
    """A :class:`RowSource` over a float32 C-order ``.npy`` file, read with ``readinto`` into one
    reusable chunk buffer (15-50x faster than zarr chunk reads, docs/benchmarks.md; no memory map, so the file's
    pages never count as the process's resident memory)."""

    def __init__(self, path: str | Path, chunk_size: int = 65536):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            self.offset = fh.tell()
        if len(shape) != 2 or fortran or dtype != np.float32:
            raise ValueError(f"{path}: expected a C-order float32 (rows, dim) array, got {shape} {dtype}")
        self.n_rows, self.dim = int(shape[0]), int(shape[1])
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.chunk_size = int(chunk_size)

    def chunks(self) -> Iterator[np.ndarray]:
        buf = np.empty((min(self.chunk_size, max(self.n_rows, 1)), self.dim), dtype=np.float32)
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.offset)
            for start in range(0, self.n_rows, self.chunk_size):
                m = min(self.chunk_size, self.n_rows - start)
                view = memoryview(buf[:m]).cast("B")
                got = 0
                while got < len(view):
                    n = fh.readinto(view[got:])
                    if not n:
                        raise ValueError(f"{self.path}: file ends early at row {start}")
                    got += n
                yield buf[:m]


@dataclass
class KMeansResult:
    """Fitted centroids and the fit's bookkeeping."""

    centroids: np.ndarray  # (k, d) float32
    iterations: int  # Lloyd updates performed
    converged: bool  # stopped because no assignment changed
    reseeded: int  # empty-cluster re-seeds over all iterations
    unresolved_empty: int  # clusters left empty at the last update (no candidate row; kept old centroid)
    history: list[dict[str, float]] = field(default_factory=list)


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _prep(chunk: np.ndarray, spherical: bool, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).to(device)
    if spherical:
        x = torch.nn.functional.normalize(x, dim=1)
    return x


def _sqnorm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=1).square()


class _Scratch:
    """A reusable (rows, k) distance buffer: fresh multi-100-MB tensors per chunk cost page faults."""

    def __init__(self) -> None:
        self.buf: torch.Tensor | None = None

    def get(self, m: int, k: int, device: torch.device) -> torch.Tensor:
        if self.buf is None or self.buf.shape[0] < m or self.buf.shape[1] != k or self.buf.device != device:
            self.buf = torch.empty((m, k), dtype=torch.float32, device=device)
        return self.buf[:m]


def _nearest(x: torch.Tensor, c: torch.Tensor, cc: torch.Tensor, second: bool = False,
             scratch: _Scratch | None = None):
    """Nearest centroid, squared distance to it (and to the second nearest) for every row of x."""
    out = None if scratch is None else scratch.get(x.shape[0], c.shape[0], x.device)
    d2 = torch.addmm(cc.unsqueeze(0), x, c.T, beta=1.0, alpha=-2.0, out=out)  # ||c||^2 - 2 x.c
    best, lab = torch.min(d2, dim=1)
    xx = _sqnorm(x)
    if not torch.isfinite(best).all():
        raise ValueError("k-means input contains NaN or infinite values")
    dist = (best + xx).clamp_min_(0.0)
    if not second:
        return lab, dist
    if c.shape[0] == 1:
        return lab, dist, torch.full_like(dist, float("inf"))
    d2.scatter_(1, lab.unsqueeze(1), float("inf"))
    nxt = (torch.min(d2, dim=1).values + xx).clamp_min_(0.0)
    return lab, dist, nxt


def init_centroids(source: RowSource, k: int, seed: int, spherical: bool = False) -> np.ndarray:
    """k distinct rows chosen with a seeded generator (method §4), gathered in one streaming pass."""
    if k < 1:
        raise ValueError("k must be >= 1")
    if source.n_rows < k:
        raise ValueError(f"k-means needs at least k={k} rows, got {source.n_rows}")
    picks = np.random.default_rng(seed).choice(source.n_rows, size=k, replace=False)
    order = np.argsort(picks, kind="stable")
    sorted_picks = picks[order]
    out = np.empty((k, source.dim), dtype=np.float32)
    offset = 0
    for chunk in source.chunks():
        lo, hi = np.searchsorted(sorted_picks, [offset, offset + len(chunk)])
        if hi > lo:
            out[order[lo:hi]] = chunk[sorted_picks[lo:hi] - offset]
        offset += len(chunk)
    if offset != source.n_rows:
        raise ValueError(f"source delivered {offset} rows, expected {source.n_rows}")
    if not np.isfinite(out).all():
        raise ValueError("k-means input contains NaN or infinite values")
    if spherical:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


class _RowState:
    """Per-row label (int32) and Hamerly bounds (float32 upper, lower) in an unlinked scratch file."""

    def __init__(self, n: int, directory: str | Path | None = None):
        self.n = n
        self._fh = tempfile.TemporaryFile(dir=directory)
        self._fh.truncate(12 * n)
        self.fd = self._fh.fileno()

    def _io(self, block: int, start: int, arr: np.ndarray | None, m: int, dtype: Any) -> np.ndarray | None:
        pos = 4 * (block * self.n + start)
        if arr is None:
            data = os.pread(self.fd, 4 * m, pos)
            return np.frombuffer(data, dtype=dtype).copy()
        os.pwrite(self.fd, np.ascontiguousarray(arr, dtype=dtype).tobytes(), pos)
        return None

    def read_labels(self, start: int, m: int) -> np.ndarray:
        return self._io(0, start, None, m, np.int32)

    def read(self, start: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self._io(0, start, None, m, np.int32), self._io(1, start, None, m, np.float32),
                self._io(2, start, None, m, np.float32))

    def write(self, start: int, lab: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> None:
        self._io(0, start, lab, 0, np.int32)
        self._io(1, start, upper, 0, np.float32)
        self._io(2, start, lower, 0, np.float32)

    def close(self) -> None:
        self._fh.close()


@dataclass
class _PassStats:
    sums: torch.Tensor  # (k, d) float64
    counts: torch.Tensor  # (k,) int64
    changed: int  # rows whose label changed in this pass (all rows in a full pass)
    recomputed: int  # rows whose distances to all centroids were computed
    inertia: float | None  # exact only in a full pass
    far_x: torch.Tensor  # (f, d) rows farthest from their centroid (by upper bound), descending
    far_lab: torch.Tensor  # (f,) their clusters
    far_idx: torch.Tensor  # (f,) their row indices


class _Far:
    """Running top-k rows by distance (their vectors, clusters and row indices)."""

    def __init__(self, k: int, d: int, device: torch.device):
        self.k = k
        self.dist = torch.empty(0, device=device)
        self.x = torch.empty((0, d), device=device)
        self.lab = torch.empty(0, dtype=torch.int64, device=device)
        self.idx = torch.empty(0, dtype=torch.int64, device=device)
        self.prepare: Any = None

    def add(self, dist: torch.Tensor, x: torch.Tensor, lab: torch.Tensor, offset: int) -> None:
        """Offer the rows of one chunk (``x`` may be None: only the chosen rows are then
        prepared, from ``self.chunk``)."""
        top_d, top_i = torch.topk(dist, min(self.k, len(dist)))
        rows = x[top_i] if x is not None else self.prepare(top_i)
        self.dist = torch.cat([self.dist, top_d])
        self.x = torch.cat([self.x, rows])
        self.lab = torch.cat([self.lab, lab[top_i]])
        self.idx = torch.cat([self.idx, top_i + offset])
        keep = torch.topk(self.dist, min(self.k, len(self.dist))).indices
        self.dist, self.x, self.lab, self.idx = self.dist[keep], self.x[keep], self.lab[keep], self.idx[keep]


@torch.no_grad()
def _full_pass(source: RowSource, centroids: np.ndarray, spherical: bool, device: torch.device,
               state: _RowState | None, count_changes: bool = False) -> _PassStats:
    """Assign every row from scratch; accumulate sums; (re)initialise the Hamerly state.

    With ``count_changes`` the labels stored in ``state`` are compared with the new ones."""
    k, d = centroids.shape
    c = torch.from_numpy(centroids).to(device)
    cc = _sqnorm(c)
    sums = torch.zeros((k, d), dtype=torch.float64, device=device)
    counts = torch.zeros(k, dtype=torch.int64, device=device)
    inertia = torch.zeros((), dtype=torch.float64, device=device)
    far = _Far(k, d, device)
    scratch = _Scratch()
    rows = changed = 0
    for chunk in source.chunks():
        x = _prep(chunk, spherical, device)
        lab, dist, nxt = _nearest(x, c, cc, second=True, scratch=scratch)
        if state is not None and count_changes:
            old = state.read_labels(rows, len(x))
            changed += int((lab.cpu().numpy() != old).sum())
        sums += torch.zeros((k, d), dtype=torch.float32, device=device).index_add_(0, lab, x).double()
        counts += torch.bincount(lab, minlength=k)
        inertia += dist.double().sum()
        far.add(dist, x, lab, rows)
        if state is not None:
            state.write(rows, lab.cpu().numpy(), dist.sqrt().cpu().numpy(), nxt.sqrt().cpu().numpy())
        rows += len(x)
    if rows != source.n_rows:
        raise ValueError(f"source delivered {rows} rows, expected {source.n_rows}")
    if not count_changes:
        changed = rows
    return _PassStats(sums, counts, changed, rows, float(inertia), far.x, far.lab, far.idx)


@torch.no_grad()
def _hamerly_pass(source: RowSource, centroids: np.ndarray, shift: np.ndarray, spherical: bool,
                  device: torch.device, state: _RowState, sums: torch.Tensor,
                  counts: torch.Tensor) -> _PassStats:
    """Re-assign only the rows whose bounds allow a change; update sums/counts incrementally."""
    k, d = centroids.shape
    c = torch.from_numpy(centroids).to(device)
    cc = _sqnorm(c)
    # half the distance from each centroid to its nearest other centroid
    cd = (cc[:, None] + cc[None, :] - 2.0 * (c @ c.T)).clamp_min_(0.0)
    cd.fill_diagonal_(float("inf"))
    half = (cd.min(dim=1).values.sqrt() / 2.0) if k > 1 else torch.full((k,), float("inf"), device=device)
    delta = torch.from_numpy(shift.astype(np.float32)).to(device)
    top2 = torch.topk(delta, min(2, k))
    d_max, a_max = float(top2.values[0]), int(top2.indices[0])
    d_second = float(top2.values[1]) if k > 1 else 0.0
    far = _Far(k, d, device)
    scratch = _Scratch()
    changed = recomputed = rows = 0
    for chunk in source.chunks():
        m = len(chunk)
        lab_np, up_np, lo_np = state.read(rows, m)
        lab = torch.from_numpy(lab_np.astype(np.int64)).to(device)
        up = torch.from_numpy(up_np).to(device) + delta[lab]
        lo = torch.from_numpy(lo_np).to(device) - torch.where(lab == a_max, d_second, d_max)
        bound = torch.maximum(half[lab], lo)
        need = torch.nonzero(up * (1.0 + _BOUND_MARGIN) > bound).squeeze(1)
        x = None
        if len(need):
            x = _prep(chunk, spherical, device)
            xs = x[need]
            # tighten the upper bound with the exact distance to the current centroid
            exact = (_sqnorm(xs) - 2.0 * (xs * c[lab[need]]).sum(dim=1) + cc[lab[need]]).clamp_min_(0.0).sqrt()
            up[need] = exact
            still = up[need] * (1.0 + _BOUND_MARGIN) > bound[need]
            rec = need[still]
            if len(rec):
                new_lab, dist, nxt = _nearest(x[rec], c, cc, second=True, scratch=scratch)
                old_lab = lab[rec]
                moved = new_lab != old_lab
                if moved.any():
                    xm = x[rec[moved]].double()
                    sums.index_add_(0, old_lab[moved], -xm)
                    sums.index_add_(0, new_lab[moved], xm)
                    counts -= torch.bincount(old_lab[moved], minlength=k)
                    counts += torch.bincount(new_lab[moved], minlength=k)
                    changed += int(moved.sum())
                lab[rec] = new_lab
                up[rec] = dist.sqrt()
                lo[rec] = nxt.sqrt()
                recomputed += len(rec)
        far.prepare = lambda idx, chunk=chunk: _prep(chunk[idx.cpu().numpy()], spherical, device)
        far.add(up, x, lab, rows)
        state.write(rows, lab.cpu().numpy(), up.cpu().numpy(), lo.cpu().numpy())
        rows += m
    if rows != source.n_rows:
        raise ValueError(f"source delivered {rows} rows, expected {source.n_rows}")
    return _PassStats(sums, counts, changed, recomputed, None, far.x, far.lab, far.idx)


def _reseed(stats: _PassStats, old: np.ndarray, spherical: bool,
            state: _RowState | None) -> tuple[np.ndarray, int, int]:
    """New centroids from a pass, re-seeding empty clusters; returns (centroids, re-seeded, still empty).

    Re-seeded rows move to their new cluster in ``stats.sums``/``counts`` (and in ``state``)."""
    counts_t = stats.counts
    far_lab = stats.far_lab.cpu().numpy()
    far_idx = stats.far_idx.cpu().numpy()
    counts = counts_t.cpu().numpy().copy()  # a copy: counts_t is updated separately
    empty = np.flatnonzero(counts == 0)
    reseeded = np.zeros(len(old), dtype=bool)
    cand = 0
    for j in empty:
        # farthest remaining row whose cluster keeps at least one member after losing it
        while cand < len(far_lab) and counts[far_lab[cand]] <= 1:
            cand += 1
        if cand == len(far_lab):
            break
        owner, row = int(far_lab[cand]), int(far_idx[cand])
        xr = stats.far_x[cand].double()
        stats.sums[owner] -= xr
        stats.sums[j] = xr
        counts[owner] -= 1
        counts[j] = 1
        counts_t[owner] -= 1
        counts_t[j] = 1
        if state is not None:
            state.write(row, np.array([j]), np.zeros(1), np.zeros(1))
        reseeded[j] = True
        cand += 1
    sums = stats.sums.cpu().numpy()
    new = old.astype(np.float64)
    members = counts > 0
    new[members] = sums[members] / counts[members, None]
    if spherical:
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        ok = norms[:, 0] > 1e-12
        new[ok] /= norms[ok]
        new[~ok] = old[~ok]
    return new.astype(np.float32), int(reseeded.sum()), int((counts == 0).sum())


def kmeans(source: RowSource, k: int, iterations: int = 100, seed: int = 0, spherical: bool = False,
           device: str | torch.device = "cpu", init: np.ndarray | None = None, accelerate: bool = True,
           scratch_dir: str | Path | None = None, progress: bool = True) -> KMeansResult:
    """Fit k-means by streaming Lloyd iterations over ``source`` (see the module docstring)."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    dev = _device(device)
    centroids = init_centroids(source, k, seed, spherical) if init is None else np.asarray(init, np.float32)
    if centroids.shape != (k, source.dim):
        raise ValueError(f"init centroids have shape {centroids.shape}, expected {(k, source.dim)}")
    state = _RowState(source.n_rows, scratch_dir) if accelerate else None
    history: list[dict[str, float]] = []
    reseeded_total = 0
    converged = False
    still_empty = 0
    sums = counts = None
    bar = tqdm(range(iterations), desc=f"k-means k={k} n={source.n_rows}", unit="it", disable=not progress)
    try:
        prev_shift: np.ndarray | None = None
        use_bounds = False
        for it in bar:
            t0 = time.perf_counter()
            if state is None or prev_shift is None or not use_bounds:
                stats = _full_pass(source, centroids, spherical, dev, state, count_changes=it > 0)
            else:
                stats = _hamerly_pass(source, centroids, prev_shift, spherical, dev, state, sums, counts)
            new, reseeded, still_empty = _reseed(stats, centroids, spherical, state)
            sums, counts = stats.sums, stats.counts
            shift = np.sqrt(((new.astype(np.float64) - centroids) ** 2).sum(axis=1))
            reseeded_total += reseeded
            entry = {"iteration": it + 1, "recomputed": stats.recomputed, "max_shift": float(shift.max()),
                     "reseeded": reseeded, "seconds": time.perf_counter() - t0}
            if stats.inertia is not None:
                entry["inertia"] = stats.inertia  # w.r.t. the centroids this pass assigned to
            if state is not None:
                entry["changed"] = stats.changed
                # speed only (both passes give Lloyd's assignments): bounds pay off once few rows
                # move; fall back to full passes while most rows need their distances anyway
                if stats.inertia is None:
                    use_bounds = stats.recomputed <= _BOUNDS_MAX_RECOMPUTED * source.n_rows
                else:
                    use_bounds = stats.changed <= _BOUNDS_MAX_CHANGED * source.n_rows
            history.append(entry)
            bar.set_postfix(recomputed=stats.recomputed, reseeded=reseeded)
            log.debug("k-means iteration %d: %s", it + 1, entry)
            if state is None:
                no_change = np.array_equal(new, centroids)
            else:  # no row moved: the sums, hence the centroids, are those of the previous update
                no_change = it > 0 and stats.changed == 0 and reseeded == 0
            centroids = new
            prev_shift = shift
            if no_change:
                converged = True
                break
    finally:
        bar.close()
        if state is not None:
            state.close()
    return KMeansResult(centroids=centroids, iterations=len(history), converged=converged,
                        reseeded=reseeded_total, unresolved_empty=still_empty,
                        history=history)


@torch.inference_mode()
def assign(source: RowSource, centroids: np.ndarray, spherical: bool = False,
           device: str | torch.device = "cpu") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Nearest centroid (int64) and squared distance (float32) of every row, chunk by chunk."""
    dev = _device(device)
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)).to(dev)
    cc = _sqnorm(c)
    scratch = _Scratch()
    for chunk in source.chunks():
        lab, dist = _nearest(_prep(chunk, spherical, dev), c, cc, scratch=scratch)
        yield lab.cpu().numpy().astype(np.int64), dist.cpu().numpy().astype(np.float32)


def predict(x: np.ndarray, centroids: np.ndarray, spherical: bool = False,
            device: str | torch.device = "cpu") -> np.ndarray:
    """Nearest-centroid labels of an in-memory (n, d) array."""
    labels = [lab for lab, _ in assign(ArraySource(x, max(len(x), 1)), centroids, spherical, device)]
    return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)


def cluster_sizes(labels: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Members per cluster (k,) int64."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=k)[:k]

"""The MaskCut eigenproblem (docs/method.md §3.2): x = second-smallest eigenvector of (D - A) x = lambda D x.

Two solvers that return the same vector (scale: x^T D x = 1; sign: see ``canonical_sign``):

* ``dense``: CutLER's reference, ``scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2])`` (LAPACK,
  O(n^3); about 3 s for a 3600-node graph on one CPU core).
* ``fast``: the normalized-Laplacian formulation. With M = D^-1/2 A D^-1/2 (so L_sym = I - M), the
  generalized pairs are (lambda, x) = (1 - mu, D^-1/2 y) for the eigenpairs (mu, y) of M. The top
  pair of M is known (mu = 1, y1 = D^1/2 1 / ||D^1/2 1||), so it is deflated and the largest
  eigenvector of M restricted to y1's complement is found with a block Krylov (block Davidson with
  identity preconditioner, thick restarts) method. It only needs products A @ X with a few columns,
  runs batched over images on any torch device in float64, and checks its residual
  ||M y - mu y|| <= tol; items that do not converge fall back to the dense solver (logged).
  Note the D^-1/2 rescale of y (the GPU snippet of CutLER issue #74 omits it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch

from u2seg.maskcut.params import SOLVERS

log = logging.getLogger(__name__)


@dataclass
class EigenInfo:
    """Diagnostics of one batched solve."""

    solver: str
    matvecs: int = 0  # block products A @ X (fast solver)
    residual: list[float] = field(default_factory=list)  # final ||M y - mu y|| per item
    fallback: list[bool] = field(default_factory=list)  # items solved by the dense fallback
    eigenvalue: list[float] = field(default_factory=list)  # generalized eigenvalue lambda_2 per item


def canonical_sign(x: torch.Tensor, rtol: float = 1e-9) -> torch.Tensor:
    """Flip each row of (..., n) so that its largest-magnitude entry is positive.

    Eigenvectors are defined up to sign; LAPACK's choice is arbitrary and differs between solvers
    and builds. Both solvers return this canonical sign so that their masks are identical. Among
    entries within ``rtol`` of the largest magnitude (exact ties up to rounding) the first decides.
    """
    mag = x.abs()
    top = mag.amax(dim=-1, keepdim=True)
    near = mag >= top * (1 - rtol)
    idx = near.to(torch.int8).argmax(dim=-1, keepdim=True)  # first True
    sign = torch.where(torch.gather(x, -1, idx) < 0, -1.0, 1.0).to(x.dtype)
    return x * sign


def dense_fiedler(adjacency: np.ndarray | torch.Tensor) -> tuple[np.ndarray, float]:
    """CutLER's solver: ``scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2])``, eigenpair 1 -> (x, lambda_2).

    x is D-normalised (x^T D x = 1) with LAPACK's (arbitrary) sign.
    """
    a = adjacency.detach().cpu().numpy() if isinstance(adjacency, torch.Tensor) else np.asarray(adjacency)
    a = a.astype(np.float64, copy=False)
    deg = np.diag(a.sum(axis=1))
    values, vectors = scipy.linalg.eigh(deg - a, deg, subset_by_index=[1, 2])
    return vectors[:, 0], float(values[0])


def _orthonormalize(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning ``w`` minus its projection on the orthonormal ``basis`` (CGS2)."""
    for _ in range(2):
        w = w - basis @ (basis.transpose(-1, -2) @ w)
    q, _ = torch.linalg.qr(w)
    # QR of (numerically) rank-deficient blocks can leave components along `basis`: clean once more.
    q = q - basis @ (basis.transpose(-1, -2) @ q)
    q, _ = torch.linalg.qr(q)
    return q


def fast_fiedler(adjacency: torch.Tensor, tol: float = 1e-10, block: int = 8, max_basis: int = 48,
                 max_matvecs: int = 400, seed: int = 0) -> tuple[torch.Tensor, EigenInfo]:
    """Batched normalized-Laplacian solver: (B, n, n) float64 affinities -> (B, n) x with x^T D x = 1.

    ``block`` columns are multiplied at once (on a CPU a product with 8 columns costs about as much
    as with one: the n x n matrix is read once). Sign: ``canonical_sign``.
    """
    a = adjacency.to(torch.float64)
    if a.ndim == 2:
        x, info = fast_fiedler(a.unsqueeze(0), tol, block, max_basis, max_matvecs, seed)
        return x[0], info
    bsz, n, _ = a.shape
    deg = a.sum(-1)
    if bool((deg <= 0).any()):
        raise ValueError("affinity has a node with zero degree")
    dis = deg.rsqrt().unsqueeze(-1)  # (B, n, 1)
    y1 = deg.sqrt().unsqueeze(-1)
    y1 = y1 / torch.linalg.vector_norm(y1, dim=1, keepdim=True)
    info = EigenInfo(solver="fast")

    if n < max(3 * block, 2 * max_basis):  # small graph: direct dense eigendecomposition of M
        m = dis * a * dis.transpose(-1, -2)
        values, vectors = torch.linalg.eigh((m + m.transpose(-1, -2)) / 2)
        y = vectors[..., -2]
        mu = values[..., -2]
        res = torch.linalg.vector_norm(m @ y.unsqueeze(-1) - mu[:, None, None] * y.unsqueeze(-1), dim=(1, 2))
    else:
        y, mu, res, info.matvecs = _block_krylov(a, dis, y1, tol, block, max_basis, max_matvecs, seed)

    x = dis.squeeze(-1) * y
    info.residual = [float(r) for r in res.cpu()]
    info.eigenvalue = [float(1.0 - v) for v in mu.cpu()]
    info.fallback = [False] * bsz
    for i in range(bsz):
        if not (info.residual[i] <= tol):
            log.warning("fast eigensolver did not converge (residual %.2e > %.1e after %d products); "
                        "using the dense solver for this graph", info.residual[i], tol, info.matvecs)
            xd, lam = dense_fiedler(a[i])
            x[i] = torch.from_numpy(xd).to(x)
            info.fallback[i] = True
            info.eigenvalue[i] = lam
    return canonical_sign(x), info


def _block_krylov(a: torch.Tensor, dis: torch.Tensor, y1: torch.Tensor, tol: float, block: int,
                  max_basis: int, max_matvecs: int, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Largest eigenpair of M = D^-1/2 A D^-1/2 on the complement of y1 (block Davidson, no preconditioner).

    Returns (y (B, n) unit, mu (B,), residual (B,), number of block products).
    """
    bsz, n, _ = a.shape

    def apply(v: torch.Tensor) -> torch.Tensor:  # M v, kept orthogonal to y1
        sv = dis * v
        if a.device.type == "cpu":  # per-item 2-D products: faster than a batched bmm on CPU
            w = torch.stack([a[i] @ sv[i] for i in range(bsz)])
        else:
            w = a @ sv
        w = dis * w
        return w - y1 @ (y1.transpose(-1, -2) @ w)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    start = torch.randn(bsz, n, block, generator=gen, dtype=torch.float64).to(a.device)
    basis = _orthonormalize(start, y1)
    image = apply(basis)
    matvecs = 1
    while True:
        h = basis.transpose(-1, -2) @ image
        theta, s = torch.linalg.eigh((h + h.transpose(-1, -2)) / 2)
        top = s[..., -block:]  # Ritz vectors of the `block` largest Ritz values (ascending)
        ritz = basis @ top
        ritz_image = image @ top
        resid = ritz_image - ritz * theta[:, None, -block:]
        res = torch.linalg.vector_norm(resid[..., -1], dim=1)
        if bool((res <= tol).all()) or matvecs >= max_matvecs:
            return ritz[..., -1], theta[:, -1], res, matvecs
        if basis.shape[-1] + block > max_basis:  # thick restart on the current Ritz vectors
            keep = s[..., -2 * block:] if 3 * block <= max_basis else top
            basis, image = basis @ keep, image @ keep
        new = _orthonormalize(resid, torch.cat([y1, basis], dim=-1))
        basis = torch.cat([basis, new], dim=-1)
        image = torch.cat([image, apply(new)], dim=-1)
        matvecs += 1


def second_eigenvectors(adjacency: torch.Tensor, solver: str = "fast", tol: float = 1e-10,
                        seed: int = 0) -> tuple[torch.Tensor, EigenInfo]:
    """Second generalized eigenvectors of a batch (B, n, n) of affinities, canonical sign, x^T D x = 1."""
    if solver == "fast":
        return fast_fiedler(adjacency, tol=tol, seed=seed)
    if solver == "dense":
        info = EigenInfo(solver="dense")
        out = []
        for a in adjacency:
            x, lam = dense_fiedler(a)
            out.append(torch.from_numpy(x))
            info.eigenvalue.append(lam)
        info.fallback = [False] * len(out)
        x = torch.stack(out).to(device=adjacency.device, dtype=torch.float64)
        return canonical_sign(x), info
    raise ValueError(f"unknown eigen solver {solver!r} (choose from {', '.join(SOLVERS)})")

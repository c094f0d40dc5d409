"""The fast normalized-Laplacian solver returns the dense generalized solver's eigenvector."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.maskcut.synthetic import blob_features
from u2seg.maskcut.affinity import binarized_affinity, flatten_grid, similarity_above
from u2seg.maskcut.eigen import canonical_sign, dense_fiedler, fast_fiedler, second_eigenvectors


def _graph(features: np.ndarray, tau: float = 0.15, painted: np.ndarray | None = None) -> torch.Tensor:
    above = similarity_above(flatten_grid(features[None]), tau)
    mask = None if painted is None else torch.from_numpy(painted.reshape(1, -1))
    return binarized_affinity(above, tau, 1e-5, mask)


def _abs_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b))


def _random_graph(n: int, density: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < density, 1)
    a = np.where(upper | upper.T, 1.0, 1e-5)
    np.fill_diagonal(a, 1.0)
    return torch.from_numpy(a)[None]


GRAPHS = {
    "random_sparse": lambda: _random_graph(400, 0.05, 1),
    "random_dense": lambda: _random_graph(400, 0.6, 2),
    "blobs_30x30": lambda: _graph(blob_features(30, 30, [(3, 4, 12, 14), (16, 17, 27, 26)], noise=0.6)),
    "noisy_blobs_20x24": lambda: _graph(blob_features(20, 24, [(2, 2, 9, 20)], noise=1.5, seed=3)),
    "painted_30x30": lambda: _graph(blob_features(30, 30, [(3, 4, 12, 14), (16, 17, 27, 26)], noise=0.6),
                                    painted=np.pad(np.ones((9, 10), bool), ((3, 18), (4, 16)))),
    "gaussian_features": lambda: _graph(np.random.default_rng(4).normal(size=(48, 25, 25)), tau=0.0),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_fast_matches_dense(name):
    a = GRAPHS[name]()
    x_fast, info = fast_fiedler(a, tol=1e-10)
    x_dense, lam = dense_fiedler(a[0])
    assert info.matvecs > 0 and not info.fallback[0]  # the Krylov path, converged on its own
    assert _abs_cos(x_fast[0].numpy(), x_dense) >= 0.999
    assert _abs_cos(x_fast[0].numpy(), x_dense) > 1 - 1e-9  # in practice equal to rounding
    assert info.eigenvalue[0] == pytest.approx(lam, abs=1e-9)
    # same scale: x^T D x = 1 (LAPACK's B-normalisation), and D-orthogonal to the constant vector
    d = a[0].sum(1).numpy()
    xf = x_fast[0].numpy()
    assert xf @ (d * xf) == pytest.approx(1.0, abs=1e-9)
    assert abs(xf @ d) < 1e-8 * np.abs(xf).max() * d.sum()
    np.testing.assert_allclose(xf, canonical_sign(torch.from_numpy(x_dense)[None])[0].numpy(), atol=1e-7)


def test_batched_equals_single_and_small_graph_path():
    blobs = GRAPHS["blobs_30x30"]()
    graphs = torch.cat([blobs, GRAPHS["painted_30x30"](), blobs.flip(-1).flip(-2)])  # last: nodes reversed
    xb, info = second_eigenvectors(graphs, "fast")
    assert xb.shape == (3, 900) and not any(info.fallback)
    for i in range(3):
        xi, _ = second_eigenvectors(graphs[i:i + 1], "fast")
        np.testing.assert_allclose(xb[i].numpy(), xi[0].numpy(), atol=1e-8)
    small = _graph(blob_features(6, 7, [(1, 1, 4, 4)], noise=0.3))  # n = 42: direct eigendecomposition
    xs, info = fast_fiedler(small)
    assert info.matvecs == 0 and _abs_cos(xs[0].numpy(), dense_fiedler(small[0])[0]) > 1 - 1e-9


def test_unnormalized_y_is_not_x():
    """CutLER issue #74: y2 of L_sym without the D^-1/2 rescale is a different vector."""
    a = _random_graph(300, 0.1, 5)  # heterogeneous degrees
    x_dense, _ = dense_fiedler(a[0])
    d = a[0].sum(1).numpy()
    m = a[0].numpy() / np.sqrt(np.outer(d, d))
    y2 = np.linalg.eigh(m)[1][:, -2]
    assert _abs_cos(y2 / np.sqrt(d), x_dense) > 1 - 1e-9
    assert _abs_cos(y2, x_dense) < 0.999


def test_canonical_sign_and_dense_solver_agree():
    a = GRAPHS["blobs_30x30"]()
    xd, _ = second_eigenvectors(a, "dense")
    xf, _ = second_eigenvectors(a, "fast")
    for x in (xd[0], xf[0]):
        assert x[x.abs().argmax()] > 0
    np.testing.assert_allclose(canonical_sign(-xd), xd)
    np.testing.assert_allclose(xd.numpy(), xf.numpy(), atol=1e-8)


def test_fallback_when_not_converged():
    a = GRAPHS["random_sparse"]()
    x, info = fast_fiedler(a, max_matvecs=1)
    assert info.fallback == [True]
    assert _abs_cos(x[0].numpy(), dense_fiedler(a[0])[0]) > 1 - 1e-9


def test_unknown_solver():
    with pytest.raises(ValueError, match="unknown eigen solver"):
        second_eigenvectors(GRAPHS["random_sparse"](), "arpack")


def test_cuda_batched_solver_matches_dense():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the GPU path of the fast solver is exercised only where one exists")
    graphs = torch.cat([GRAPHS["blobs_30x30"](), GRAPHS["painted_30x30"]()])
    x_gpu, info = fast_fiedler(graphs.cuda())
    assert x_gpu.is_cuda and not any(info.fallback)
    for i in range(2):
        np.testing.assert_allclose(x_gpu[i].cpu().numpy(),
                                   canonical_sign(torch.from_numpy(dense_fiedler(graphs[i])[0])[None])[0].numpy(),
                                   atol=1e-7)

"""MaskCut tests: keep scipy/numpy's OpenBLAS at one thread too (torch is limited by tests/conftest.py)."""
from __future__ import annotations

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield

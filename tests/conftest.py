"""Shared test fixtures and the test tiers: repository paths, shared data, `snakemake` marking."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.snakemake_marking import forbid_snakemake, item_starts_snakemake
from tests.snakemake_runner import REPO, run_snakemake  # noqa: F401 - the tests import both from here

SHARED_DATA = REPO.parent / "shared" / "data"
COCO_MINI = SHARED_DATA / "coco-mini"
COCO_PANOPTIC_SAMPLE = SHARED_DATA / "coco-panoptic-sample"


def require_shared(path: Path) -> Path:
    """Skip (with the reason) when the shared COCO data is not beside the repository."""
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (it lives in ../shared/data beside the repo)")
    return path


# Fixtures that make every test using them `slow`: `detectron2` builds detectron2 from source the first
# time (minutes) and installs it into the running environment.
SLOW_FIXTURES = frozenset({"detectron2"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `snakemake` every test that starts Snakemake through tests/snakemake_runner.py, and `slow`
    every test that uses one of SLOW_FIXTURES (directly or through another fixture)."""
    for item in items:
        if item.get_closest_marker("snakemake") is None and item_starts_snakemake(item):
            item.add_marker(pytest.mark.snakemake)
        if item.get_closest_marker("slow") is None and SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _guard(item: pytest.Item) -> contextlib.AbstractContextManager:
    """No Snakemake process may start in a test not marked `snakemake` (tests/snakemake_marking.py)."""
    if item.get_closest_marker("snakemake") is not None:
        return contextlib.nullcontext()
    return forbid_snakemake(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    with _guard(item):
        return (yield)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Keep tests within the CI machine's 2 cores."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield

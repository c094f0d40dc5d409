"""Shared test fixtures: repository paths, shared data, and an isolated Snakemake runner."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
COCO_MINI = SHARED_DATA / "coco-mini"
COCO_PANOPTIC_SAMPLE = SHARED_DATA / "coco-panoptic-sample"


def require_shared(path: Path) -> Path:
    """Skip (with the reason) when the shared COCO data is not beside the repository."""
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (it lives in ../shared/data beside the repo)")
    return path


def _config_args(workdir: Path, config: dict) -> list[str]:
    """Flat keys go to --config; nested sections to a --configfile (Snakemake merges it recursively)."""
    import yaml

    flat = {k: v for k, v in config.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in config.items() if isinstance(v, dict)}
    args = []
    if nested:
        path = workdir / "test-overrides.yaml"
        path.write_text(yaml.safe_dump(nested))
        args += ["--configfile", str(path)]
    return args + ["--config", *[f"{k}={v}" for k, v in flat.items()]]


def run_snakemake(workdir: Path, targets: list[str], config: dict | None = None,
                  extra: list[str] | None = None, check: bool = True,
                  timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile with its own working directory (own .snakemake lock).

    ``results`` defaults to ``<workdir>/results``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = {"results": str(workdir / "results")}
    cfg.update(config or {})
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *targets, *(extra or []), *_config_args(workdir, cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(autouse=True)
def _torch_threads():
    """Keep tests within the CI machine's 2 cores."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield

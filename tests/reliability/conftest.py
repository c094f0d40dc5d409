"""Pipeline runs shared by the reliability tests (each runs once per session)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import subprocess

import pytest

from tests.configs import tiny_config
from tests.reliability import helpers
from tests.snakemake_runner import run_snakemake, run_snakemake_and_kill

# Folder names that would run commands if a rule pasted a config value into its shell line unquoted.
# Relative `touch` targets land in the Snakemake working directory (the jobs' cwd).
INJECT_IMAGES = "imgs 'q' \"x\" $(touch pwned1); touch pwned2 && `touch pwned3` #"
INJECT_RESULTS = "res dir 'q' \"x\" $(touch pwned4)"
INJECT_WEIGHTS = "$(touch pwned5)'; touch pwned6; '"  # ignored by efficientnet_lite2, still passed to the CLI
PWNED = [f"pwned{i}" for i in range(1, 7)]


@dataclass
class Run:
    workdir: Path
    results: Path
    ds: str
    target: str
    proc: subprocess.CompletedProcess
    images_dir: Path | None = None

    @property
    def out(self) -> Path:
        return self.results / self.ds


@pytest.fixture(scope="session")
def odd_run(tmp_path_factory) -> Run:
    """dataset=images over every odd image kind, in folders with spaces, quotes and shell syntax."""
    base = tmp_path_factory.mktemp("odd")
    images_dir = base / INJECT_IMAGES
    helpers.make_odd_images(images_dir)
    workdir = base / "work"
    results = base / INJECT_RESULTS
    target = "pseudo_labels"
    cfg = tiny_config("small", dataset="images", images_dir=str(images_dir), results=str(results),
                      weights=INJECT_WEIGHTS, ingest={"max_skipped_fraction": 0.5})
    cfg["features"]["shard_size"] = 16
    proc = run_snakemake(workdir, [target], cfg)
    return Run(workdir, results, "images", target, proc, images_dir)


def _clean_run(tmp_path_factory, name: str, target: str) -> Run:
    workdir = tmp_path_factory.mktemp(name)
    proc = run_snakemake(workdir, [target], tiny_config("small", dataset="samples"))
    return Run(workdir, workdir / "results", "samples", target, proc)


# What the reference and the interrupted run build.
MAIN_TARGET = "train"


@pytest.fixture(scope="session")
def clean_run_a(tmp_path_factory) -> Run:
    """A clean run on the sample photos (tests/configs/small.yaml) up to training."""
    return _clean_run(tmp_path_factory, "clean_a", MAIN_TARGET)


@pytest.fixture(scope="session")
def clean_run_b(tmp_path_factory) -> Run:
    """A second, independent clean run with the same config, up to the pseudo-labels."""
    return _clean_run(tmp_path_factory, "clean_b", "pseudo_labels")


@dataclass
class Interrupted:
    run: Run
    features_kill: dict  # what the tree looked like right after the SIGKILL during feature extraction
    locked_rerun: subprocess.CompletedProcess  # a rerun before `--unlock`
    train_kill: dict  # right after the SIGKILL during training


@pytest.fixture(scope="session")
def interrupted_run(tmp_path_factory) -> Interrupted:
    """The clean run's config and target, SIGKILLed (whole process group) in the middle of feature
    extraction and again in the middle of training, then rerun to completion.

    Recovery is what a user does after a kill: `snakemake --unlock`, then the same command again.
    """
    workdir = tmp_path_factory.mktemp("interrupted")
    cfg = tiny_config("small", dataset="samples")
    target = MAIN_TARGET
    res = workdir / "results"
    feats = res / "samples" / "features"
    flogs = res / "logs" / "samples" / "features"

    # 1. kill while one shard is being extracted and the other one is finished (2 threads per job on
    #    2 cores: one shard job at a time, in an order Snakemake chooses)
    def shard_done(i):
        return (feats / f"shard_{i:05d}.zarr").is_dir()

    def one_done_one_running():
        done = [i for i in (0, 1) if shard_done(i)]
        return len(done) == 1 and (flogs / f"shard_{1 - done[0]:05d}.log").is_file() and not shard_done(1 - done[0])

    out1, _ = run_snakemake_and_kill(workdir, [target], cfg, when=one_done_one_running)
    entries = sorted(p.name for p in feats.iterdir())
    killed = "shard_00001.zarr" if "shard_00000.zarr" in entries else "shard_00000.zarr"
    features_kill = {
        "output": out1,
        "entries": entries,
        "killed": killed,
        "incomplete_markers": len(list((workdir / ".snakemake" / "incomplete").iterdir())),
    }

    locked = run_snakemake(workdir, [target], cfg, check=False)
    run_snakemake(workdir, [target], cfg, extra=["--unlock"])

    work = res / "samples" / "train" / "r1" / "work"
    out2, _ = run_snakemake_and_kill(workdir, [target], cfg, when=lambda: (work / "last_checkpoint").is_file())
    train_kill = {
        "output": out2,
        "work": sorted(p.name for p in work.iterdir()),
        "pointer": (work / "last_checkpoint").read_text().strip(),
        "final_exists": (res / "samples" / "train" / "r1" / "model_final.pth").exists(),
    }
    run_snakemake(workdir, [target], cfg, extra=["--unlock"])

    proc = run_snakemake(workdir, [target], cfg)
    return Interrupted(Run(workdir, res, "samples", target, proc), features_kill, locked, train_kill)

"""Interruption: SIGKILL of the whole Snakemake process group in the middle of feature extraction and
again in the middle of training; after `snakemake --unlock` the same command finishes the run, and
its outputs equal those of an uninterrupted run.

Half-written outputs are never taken as finished because every writer is atomic (temporary sibling +
rename): a killed job leaves no file under its final name. Snakemake's own incomplete markers
(`rerun-incomplete` in profiles/default) are NOT a second line of defence here: Snakemake 9 checks
them before it resolves checkpoints, so every job after the `ingest` checkpoint (features and all
later stages) escapes the check; see test_snakemake_ignores_incomplete_markers_behind_a_checkpoint.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import REPO
from tests.snakemake_runner import run_snakemake, run_snakemake_and_kill
from tests.reliability import helpers


def test_profile_is_used_with_directory(interrupted_run):
    # run from a foreign working directory: profiles/default is found beside the Snakefile
    assert f"Using workflow specific profile {REPO / 'profiles' / 'default'}" in interrupted_run.features_kill["output"]


def test_features_kill_leaves_only_finished_shards(interrupted_run):
    state = interrupted_run.features_kill
    # one shard finished, the other was running: no store (not even a partial one) under its final name
    finished = ({"shard_00000.zarr", "shard_00001.zarr"} - {state["killed"]}).pop()
    assert finished in state["entries"] and state["killed"] not in state["entries"]
    assert state["incomplete_markers"] >= 1  # Snakemake remembers the killed job


def test_rerun_before_unlock_says_how_to_recover(interrupted_run):
    proc = interrupted_run.locked_rerun
    assert proc.returncode != 0
    assert "--unlock" in proc.stdout + proc.stderr


def test_killed_shard_is_recomputed(interrupted_run, clean_run_a):
    out = interrupted_run.run.out
    zarr_json = json.loads((out / "features" / interrupted_run.features_kill["killed"] / "zarr.json").read_text())
    assert zarr_json["node_type"] == "group"
    diffs, _ = helpers.compare_trees(clean_run_a.out / "features", out / "features")
    assert diffs == []


def test_interrupted_run_gives_the_same_pseudo_labels(interrupted_run, clean_run_a):
    for sub in ("maskcut", "pseudo"):
        diffs, _ = helpers.compare_trees(clean_run_a.out / sub, interrupted_run.run.out / sub)
        assert diffs == [], sub
    for rel in ("pseudo/instances.json", "pseudo/panoptic.json"):
        assert (clean_run_a.out / rel).read_bytes() == (interrupted_run.run.out / rel).read_bytes()


def test_training_resumes_from_its_last_checkpoint(interrupted_run, clean_run_a):
    state = interrupted_run.train_kill
    assert not state["final_exists"]  # killed before the end
    assert state["pointer"] in state["work"]
    killed_at = int(state["pointer"].removeprefix("model_").removesuffix(".pth"))
    out = interrupted_run.run.out
    log = (out.parent / "logs" / "samples" / "train" / "r1.log").read_text()
    assert f"at iteration {killed_at}" in log and "resumed from" in log
    summary = json.loads((out / "train" / "r1" / "summary.json").read_text())
    assert summary["resumed_at"] == killed_at > 0
    # same losses at every iteration, same final weights and checkpoints as the uninterrupted run
    diffs, _ = helpers.compare_trees(clean_run_a.out / "train", out / "train")
    diffs = [d for d in diffs if not d.startswith("r1/summary.json")]  # resumed_at differs by design
    # the python/numpy global RNG states saved in the training checkpoints are never seeded (the
    # trainer draws only from torch, reseeded per iteration), so they differ between processes
    ckpts = [d for d in diffs if d.startswith("r1/work/model_") and d.endswith(": tensors differ")]
    for d in ckpts:
        rel = d.split(":")[0]
        a, b = (torch.load(root / "train" / rel, weights_only=True) for root in (clean_run_a.out, out))
        for ck in (a, b):
            ck["rng"].pop("python"), ck["rng"].pop("numpy")
        assert helpers._tensors_equal(a, b), rel
    assert [d for d in diffs if d not in ckpts] == []
    a = json.loads((clean_run_a.out / "train" / "r1" / "summary.json").read_text())
    b = dict(summary, resumed_at=0)
    assert helpers.strip_timing(a) == helpers.strip_timing(b)


# ------------------------------------------------------------------ atomic writes under SIGKILL
_KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from pathlib import Path
    from u2seg import atomic, features
    target, kind = Path(sys.argv[1]), sys.argv[2]
    if kind == "file":
        with atomic.atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"x" * 100000)
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    else:  # a feature shard killed after its first array is written
        import zarr
        real = zarr.Group.create_array
        def create_then_die(self, name, *a, **k):
            arr = real(self, name, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        zarr.Group.create_array = create_then_die
        features.write_shard(target, np.zeros((2, 3, 2, 2)), np.zeros((2, 4)), np.array([1, 2]),
                             np.array([[5, 6], [7, 8]]), {"backbone": "x"})
""")


@pytest.mark.parametrize("kind", ["file", "zarr"])
def test_sigkill_mid_write_never_leaves_a_final_name(tmp_path, kind):
    target = tmp_path / ("out.bin" if kind == "file" else "shard_00000.zarr")
    proc = subprocess.run([sys.executable, "-c", _KILL_MID_WRITE, str(target), kind], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not target.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers and all(n.startswith(f".{target.name}.") and n.endswith(".tmp") for n in leftovers)
    # a later write succeeds next to the leftover and is complete
    if kind == "file":
        from u2seg import atomic

        atomic.write_bytes(target, b"done")
        assert target.read_bytes() == b"done"
    else:
        import numpy as np

        from u2seg.features import open_shard, write_shard

        write_shard(target, np.ones((2, 3, 2, 2)), np.ones((2, 4)), np.array([1, 2]), np.array([[5, 6], [7, 8]]), {})
        assert list(open_shard(target)["image_id"][:]) == [1, 2]
    assert os.path.getsize(target) > 0


# ------------------------------------- Snakemake's incomplete markers and checkpoints (upstream gap)
_GAP_SNAKEFILE = """
import os

def slow():
    return "sleep 60; " if os.path.exists("slow") else ""

checkpoint count:
    output: "n.txt"
    shell: "echo 1 > {output}"

def parts(wc):
    n = int(open(checkpoints.count.get().output[0]).read())
    return [f"part_{i}.txt" for i in range(n)]

# non-atomic writers: half the content, (sleep), the rest
rule part:
    output: "part_{i}.txt"
    shell: "printf half > {output}; " + slow() + "printf done >> {output}"

rule gather:
    input: parts
    output: "all.txt"
    shell: "cat {input} > {output}"

rule direct:
    output: "direct.txt"
    shell: "printf half > {output}; " + slow() + "printf done >> {output}"
"""


@pytest.fixture(scope="module")
def gap_run(tmp_path_factory):
    """A tiny workflow killed while two non-atomic jobs had half-written their outputs, then rerun
    with --rerun-incomplete: `direct` has no checkpoint upstream, `part` depends on one."""
    d = tmp_path_factory.mktemp("gap")
    (d / "Snakefile").write_text(_GAP_SNAKEFILE)
    (d / "slow").touch()
    targets, extra = ["all.txt", "direct.txt"], ["--workflow-profile", "none", "--rerun-incomplete"]
    run_snakemake_and_kill(d, targets, None, extra=extra, snakefile=d / "Snakefile", timeout=120,
                           when=lambda: (d / "part_0.txt").exists() and (d / "direct.txt").exists())
    (d / "slow").unlink()
    run_snakemake(d, targets, extra=[*extra, "--unlock"], snakefile=d / "Snakefile")
    run_snakemake(d, targets, extra=extra, snakefile=d / "Snakefile")
    return d


def test_incomplete_markers_work_without_a_checkpoint(gap_run):
    assert (gap_run / "direct.txt").read_text() == "halfdone"  # redone, not taken as finished


@pytest.mark.xfail(strict=True, reason="Snakemake 9.27 runs check_incomplete() before resolving checkpoints: "
                                       "jobs behind a checkpoint keep half-written outputs (the u2seg CLIs "
                                       "write atomically, so no u2seg output is ever half-written)")
def test_snakemake_ignores_incomplete_markers_behind_a_checkpoint(gap_run):
    assert (gap_run / "part_0.txt").read_text() == "halfdone"

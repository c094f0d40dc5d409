"""The peak feature disk of benchmarks/feature_disk.py on small synthetic DAGs (dry-run text as Snakemake
prints it): the linear bound equals the exhaustive maximum over every state with J jobs in flight."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.script_module import load_script

REPO = Path(__file__).resolve().parents[2]


fd = load_script(REPO / "benchmarks" / "feature_disk.py")
R = "/r/images"


def _block(rule: str, jobid: int, inputs: list[str], outputs: list[str], shell: str = "u2seg x") -> str:
    lines = ["[Tue Dec  8 01:00:00 2026]", f"rule {rule}:"]
    if inputs:
        lines.append("    input: " + ", ".join(inputs))
    lines += ["    output: " + ", ".join(outputs), f"    jobid: {jobid}", "    threads: 2",
              f"Shell command: {shell}", ""]
    return "\n".join(lines)


def _fused(shards: int, keep_flag: str, zarr: bool) -> str:
    """shard_pass per shard (+ zarr output when the stuff fit reads it), a stuff fit over every shard,
    a per-shard merge, the final target."""
    text, jid = [], 1
    for s in range(shards):
        outs = [f"{R}/maskcut/shard_{s:05d}.json", f"{R}/pseudo/embed/shard_{s:05d}.npz"]
        if zarr:
            outs.append(f"{R}/features/shard_{s:05d}.zarr")
        text.append(_block("shard_pass", jid, [f"{R}/manifest.json"], outs, f"u2seg shard-pass {keep_flag} :: x"))
        jid += 1
    feats = [f"{R}/features/shard_{s:05d}.zarr" for s in range(shards)] if zarr else []
    text.append(_block("stuff_maps", jid, [f"{R}/manifest.json", *feats], [f"{R}/pseudo/stuff"]))
    jid += 1
    for s in range(shards):
        text.append(_block("merge_panoptic_shard", jid, [f"{R}/maskcut/shard_{s:05d}.json", f"{R}/pseudo/stuff"],
                           [f"{R}/pseudo/panoptic_shards/shard_{s:05d}.json"]))
        jid += 1
    text.append(_block("pseudo_labels", 0, [f"{R}/pseudo/panoptic_shards/shard_{s:05d}.json" for s in range(shards)],
                       ["pseudo_labels"]))
    return "\n".join(text)


def _separate(shards: int, stuff_reads: bool) -> str:
    """features_shard -> maskcut -> embed per shard (both read the zarr), a stuff fit reading every
    shard (or none)."""
    text, jid = [], 1
    for s in range(shards):
        z = f"{R}/features/shard_{s:05d}.zarr"
        text.append(_block("features_shard", jid, [f"{R}/manifest.json"], [z]))
        text.append(_block("maskcut", jid + 1, [z], [f"{R}/maskcut/shard_{s:05d}.json"]))
        text.append(_block("embed", jid + 2, [z, f"{R}/maskcut/shard_{s:05d}.json"], [f"{R}/embed/{s}.npz"]))
        jid += 3
    feats = [f"{R}/features/shard_{s:05d}.zarr" for s in range(shards)] if stuff_reads else []
    text.append(_block("stuff_maps", jid, [f"{R}/manifest.json", *feats], [f"{R}/pseudo/stuff"]))
    text.append(_block("pseudo_labels", 0, [f"{R}/embed/{s}.npz" for s in range(shards)] + [f"{R}/pseudo/stuff"],
                       ["pseudo_labels"]))
    return "\n".join(text)


BPI = 1000  # bytes per image


def _dag(text: str, n_images: int, shard_size: int, keep: bool):
    return fd.build_dag(fd.parse_dry_run(text), n_images, shard_size, BPI, keep)


def test_parse_dry_run_reads_jobs_and_files():
    jobs = fd.parse_dry_run(_fused(2, "--no-keep-features", zarr=False))
    assert [j.rule for j in jobs] == ["shard_pass", "shard_pass", "stuff_maps", "merge_panoptic_shard",
                                      "merge_panoptic_shard", "pseudo_labels"]
    assert jobs[0].outputs[0] == f"{R}/maskcut/shard_00000.json" and jobs[0].jobid == 1
    dag = fd.build_dag(jobs, 5, 3, BPI, keep=False)
    assert dag.deps[3] == {0, 2}


@pytest.mark.parametrize("jobs_in_flight", [1, 2, 8])
def test_fused_not_kept_writes_no_feature_disk(jobs_in_flight):
    """--no-keep-features: the pass holds its shard in memory, no feature file exists at any state."""
    dag = _dag(_fused(3, "--no-keep-features", zarr=False), 7, 3, keep=False)
    assert dag.sizes == {}
    assert fd.peak_exhaustive(dag, jobs_in_flight) == 0
    assert fd.peak_bound(dag, jobs_in_flight) == {"upper_bound_bytes": 0, "state_bytes": 0, "exact": True}


@pytest.mark.parametrize("keep", [False, True])
def test_fitted_stuff_model_keeps_every_shard(keep):
    """kmeans today: the zarr (temp() when not kept) is read by the stuff fit over every shard."""
    dag = _dag(_fused(3, "--keep-features", zarr=True), 7, 3, keep=keep)
    assert dag.temp == (set() if keep else set(dag.sizes))
    for j in (1, 2):
        assert fd.peak_exhaustive(dag, j) == 7000
        assert fd.peak_bound(dag, j) == {"upper_bound_bytes": 7000, "state_bytes": 7000, "exact": True}


def test_separate_jobs_not_kept_peak_is_every_shard_even_without_a_whole_dataset_reader():
    """temp() shards read only per shard: an ordering that runs every features job first holds all."""
    dag = _dag(_separate(3, stuff_reads=False), 9, 3, keep=False)
    assert fd.peak_exhaustive(dag, 1) == 9000
    assert fd.peak_bound(dag, 1)["exact"]


def test_state_bytes_removes_temp_after_the_last_reader():
    dag = _dag(_separate(2, stuff_reads=False), 4, 2, keep=False)
    # jobs: 0 features0, 1 maskcut0, 2 embed0, 3 features1, ...
    assert fd.state_bytes(dag, {0}, set()) == 2000
    assert fd.state_bytes(dag, {0, 1}, set()) == 2000          # embed0 still reads it
    assert fd.state_bytes(dag, {0, 1, 2}, set()) == 0          # removed
    assert fd.state_bytes(dag, {0, 1, 2}, {3}) == 2000         # features1 writing
    kept = _dag(_separate(2, stuff_reads=False), 4, 2, keep=True)
    assert fd.state_bytes(kept, {0, 1, 2}, set()) == 2000

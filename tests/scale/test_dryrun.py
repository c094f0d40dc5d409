"""A dry-run before ingest lists the per-shard jobs (shard count from the dataset listing); once
ingest has run, the shard count is the manifest's (ingest skipped an unreadable image)."""
from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from tests.conftest import run_snakemake


def _job_counts(text: str) -> dict[str, int]:
    block = text.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def test_dry_run_lists_shard_jobs_before_ingest(tmp_path: Path):
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (40, 30), (40 * i, 0, 0)).save(images / "sub" / f"a{i}.jpg")
    Image.new("RGB", (1600, 1200), (0, 90, 0)).save(images / "sub" / "big.jpg")  # 1.9 Mpx: a larger request
    (images / "sub" / "broken.jpg").write_bytes(b"not a jpeg")  # listed, then skipped by ingest
    (images / ".hidden").mkdir()
    Image.new("RGB", (40, 30)).save(images / ".hidden" / "x.jpg")  # not listed (as ingest)
    cfg = {"dataset": "images", "images_dir": str(images), "features": {"shard_size": 2},
           "ingest": {"max_skipped_fraction": 0.5}}
    proc = run_snakemake(tmp_path / "w", ["pseudo_labels"], cfg, extra=["-n"])
    jobs = _job_counts(proc.stdout)
    # 7 listed images -> 4 shards: every per-shard job is visible before ingest has run
    for rule in ("features_shard", "maskcut", "embed", "merge_panoptic_shard", "validate_pseudo_shard"):
        assert jobs[rule] == 4, (rule, jobs)
    assert jobs["ingest"] == 1
    assert re.search(r"rule features_shard:.*?resources:.*?mem_mb=\d+", proc.stdout, re.S)
    # ingest skips the broken files (a4 broken too now): 5 images -> 3 shards: a0 a1 | a2 a3 | big
    (images / "sub" / "a4.jpg").write_bytes(b"broken too")
    run_snakemake(tmp_path / "w", [str(tmp_path / "w" / "results" / "images" / "manifest.json")], cfg)
    out = run_snakemake(tmp_path / "w", ["pseudo_labels"], cfg, extra=["-n"]).stdout
    jobs = _job_counts(out)
    assert jobs["features_shard"] == 3 and jobs["maskcut"] == 3 and "ingest" not in jobs, jobs
    # memory requests follow the pixels of each shard's largest image (read from the manifest)
    mem = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"rule validate_pseudo_shard:.*?shard=(\d{5}).*?mem_mb=(\d+)", out, re.S)}
    assert set(mem) == {"00000", "00001", "00002"}, mem
    assert mem["00000"] == mem["00001"] < mem["00002"], mem

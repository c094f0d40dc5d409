"""A new user's first hour (issue 16): a typo in coco_root downloads nothing, config errors end the
output with one clear line, the pipeline explains itself (rule docstrings, targets, report command)."""
from __future__ import annotations

from pathlib import Path

from tests.reliability import helpers
from u2seg import preflight

SMALL = dict(helpers.SMALL, dataset="samples")


def _created(workdir: Path) -> list[str]:
    """What a dry run left in ``workdir`` besides the config file and Snakemake's own folder."""
    return sorted(p.name for p in workdir.iterdir() if p.name not in ("reliability-config.yaml", ".snakemake"))


def test_wrong_coco_root_dry_run_fails_naming_the_key_and_creates_nothing(tmp_path):
    typo = tmp_path / "cocoo"
    for targets, config, split in ((["extract_features"], {"dataset": "coco", "limit": 8}, "val"),
                                   (["eval_coco"], {"dataset": "samples"}, "train")):
        work = tmp_path / targets[0]
        proc = helpers.run(work, targets, dict(SMALL, coco_root=str(typo), **config), extra=["-n"], check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out[-3000:]
        assert f"coco_root={str(typo)!r} is not an existing folder" in out, out[-3000:]
        assert f"COCO {split}2017 images" in out and "evaluate.download: true" in out  # what it would fetch
        assert "Select jobs to execute" not in out and "downloading" not in out
        assert not typo.exists() and _created(work) == [], _created(work)


def test_a_misspelt_key_is_named_in_the_last_lines(tmp_path):
    proc = helpers.run(tmp_path, ["extract_features"], dict(SMALL, datset="images"), extra=["-n"], check=False)
    out = (proc.stdout + proc.stderr).rstrip().splitlines()
    assert proc.returncode != 0
    tail = "\n".join(out[-3:])
    assert "unknown key `datset` (did you mean `dataset`?)" in tail, "\n".join(out[-20:])
    assert len("\n".join(out)) < 3000  # no schema / config dump
    proc = helpers.run(tmp_path, ["extract_features"], dict(SMALL, clustering={"k": 3, "iterations": "many"}),
                       extra=["-n"], check=False)
    tail = "\n".join((proc.stdout + proc.stderr).rstrip().splitlines()[-3:])
    assert "`clustering.iterations` = 'many' must be of type integer" in tail, tail


def test_download_is_announced_with_what_where_and_size(tmp_path):
    root = tmp_path / "coco"
    cfg = {"dataset": "coco", "split": "train", "coco_root": str(root), "evaluate": {"download": True}}
    (notice,) = preflight.download_notices(cfg)
    assert "COCO train2017 images (18 GB), annotations (241 MB)" in notice and str(root) in notice
    assert preflight.download_notices(dict(cfg, evaluate={"download": False})) == []
    assert preflight.check_coco(dict(cfg, evaluate={"download": False}), "train")  # off: an error
    assert not root.exists()


def test_list_rules_explains_every_rule_and_a_mistyped_target_lists_the_targets(tmp_path):
    proc = helpers.run(tmp_path, ["--list-rules"], SMALL)
    rules = [line for line in proc.stdout.splitlines() if line and not line.startswith(("Using ", "Config "))]
    assert len(rules) > 30
    undocumented = [line for line in rules if "(" not in line]
    assert not undocumented, undocumented
    proc = helpers.run(tmp_path, ["extract_feature"], SMALL, extra=["-n"], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown target 'extract_feature'. Did you mean `extract_features`?" in out, out[-2000:]
    for target in ("all", "extract_features", "maskcut_masks", "pseudo_labels", "train", "eval_coco", "inspect"):
        assert target in out.split("Targets:")[1]

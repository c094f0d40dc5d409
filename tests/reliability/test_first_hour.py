"""A new user's first hour: a typo in coco_root downloads nothing, config errors end the
output with one clear line, the pipeline explains itself (rule docstrings, targets, report command)."""
from __future__ import annotations

from pathlib import Path

from tests.configs import tiny_config
from tests.snakemake_runner import CONFIG_FILE, run_snakemake
from u2seg import preflight

SMALL = tiny_config("small", dataset="samples")


def _created(workdir: Path) -> list[str]:
    """What a dry run left in ``workdir`` besides the config file and Snakemake's own folder."""
    return sorted(p.name for p in workdir.iterdir() if p.name not in (CONFIG_FILE, ".snakemake"))


def test_wrong_coco_root_dry_run_fails_naming_the_key_and_creates_nothing(tmp_path):
    typo = tmp_path / "cocoo"
    for targets, config, split in ((["extract_features"], {"dataset": "coco", "limit": 8}, "val"),
                                   (["eval_coco"], {"dataset": "samples"}, "train")):
        work = tmp_path / targets[0]
        proc = run_snakemake(work, targets, dict(SMALL, coco_root=str(typo), **config), extra=["-n"], check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out[-3000:]
        assert f"coco_root={str(typo)!r} is not an existing folder" in out, out[-3000:]
        assert f"COCO {split}2017 images" in out and "evaluate.download: true" in out  # what it would fetch
        assert "Select jobs to execute" not in out and "downloading" not in out
        assert not typo.exists() and _created(work) == [], _created(work)


def test_a_misspelt_key_is_named_in_the_last_lines(tmp_path):
    proc = run_snakemake(tmp_path, ["extract_features"], dict(SMALL, datset="images"), extra=["-n"], check=False)
    out = (proc.stdout + proc.stderr).rstrip().splitlines()
    assert proc.returncode != 0
    tail = "\n".join(out[-3:])
    assert "unknown key `datset` (did you mean `dataset`?)" in tail, "\n".join(out[-20:])
    assert len("\n".join(out)) < 3000  # no schema / config dump
    proc = run_snakemake(tmp_path, ["extract_features"], dict(SMALL, clustering={"k": 3, "iterations": "many"}),
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
    proc = run_snakemake(tmp_path, ["--list-rules"], SMALL)
    rules = [line for line in proc.stdout.splitlines() if line and not line.startswith(("Using ", "Config "))]
    assert len(rules) > 30
    undocumented = [line for line in rules if "(" not in line]
    assert not undocumented, undocumented
    proc = run_snakemake(tmp_path, ["extract_feature"], SMALL, extra=["-n"], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown target 'extract_feature'. Did you mean `extract_features`?" in out, out[-2000:]
    for target in ("all", "extract_features", "maskcut_masks", "pseudo_labels", "train", "eval_coco", "inspect"):
        assert target in out.split("Targets:")[1]


def test_progress_lines_have_rate_and_eta():
    import logging

    from u2seg.progress import ProgressLog, clock

    t = [0.0]
    records: list[str] = []

    class _Handler(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("u2seg.test.progress")
    logger.addHandler(_Handler())
    logger.setLevel(logging.INFO)
    prog = ProgressLog(logger, "train iter", 100, "it", period=30.0, start=20, now=lambda: t[0])
    t[0] = 2.0
    assert prog.update(1, "loss 1.0")  # the first update is logged
    t[0] = 10.0
    assert not prog.update(4)  # within the period: silent
    t[0] = 50.0
    assert prog.update(5)
    # 10 iterations in 50 s since the resumed start: 5.00 s/it, 70 left -> ETA 5:50
    assert records[-1] == "train iter 30/100 (30%), 5.00 s/it, elapsed 0:50, ETA 5:50"
    assert "loss 1.0" in records[0] and "ETA" in records[0]
    t[0] = 51.0
    assert prog.update(70)  # the last update is always logged
    assert records[-1].startswith("train iter 100/100 (100%)") and records[-1].endswith("ETA 0:00")
    assert clock(3725) == "1:02:05"


def test_last_run_config_is_used_by_a_plain_report_command(tmp_path):
    from u2seg import next_steps

    results = tmp_path / "results"
    cfg = {"dataset": "images", "images_dir": "/photos", "results": str(results), "train": {"rounds": 2}}
    path = next_steps.record_run(cfg, results / next_steps.LAST_RUN)
    report = ["snakemake", "--report", "r.html"]
    assert next_steps.report_config(report, str(results)) == cfg
    assert next_steps.report_config(["snakemake", "--report=r.html"], str(results)) == cfg
    # a run, or a report with its own config, does not read the recorded one
    assert next_steps.report_config(["snakemake", "--cores", "2"], str(results)) == {}
    assert next_steps.report_config(report + ["--config", "dataset=coco"], str(results)) == {}
    assert next_steps.report_config(report + ["--configfile=my.yaml"], str(results)) == {}
    assert next_steps.report_config(report, str(tmp_path / "elsewhere")) == {}
    # the end-of-run message: where the results are, what to open first, the report command
    (results / "images" / "pseudo" / "gallery").mkdir(parents=True)
    (results / "images" / "skipped.json").write_text("{}")
    lines = next_steps.summary_lines(str(results), "images", 2, ["pseudo_labels"], path)
    text = "\n".join(lines)
    assert f"under {results / 'images'}/" in lines[0] and "Open first:" in text
    assert text.index("pseudo/gallery") < text.index("skipped.json")
    assert f"--configfile {path}" in lines[-1] and "inspect" in lines[-1]  # no report pages yet
    (results / "report" / "images").mkdir(parents=True)
    last = next_steps.summary_lines(str(results), "images", 2, [], path)[-1]
    assert last == f"HTML report of this run: snakemake --report {results / 'report.html'} --configfile {path}"

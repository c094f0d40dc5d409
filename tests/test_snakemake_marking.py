"""The test tiers: tests that start Snakemake are found at collection, and any other start fails."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests import snakemake_runner
from tests.configs import CONFIG_DIR, tiny_config
from tests.snakemake_marking import UnmarkedSnakemakeRun, calls_snakemake, is_snakemake_command
from tests.snakemake_runner import run_snakemake


def _helper_starting_snakemake(tmp_path):
    return run_snakemake(tmp_path, ["-n"])


def _helper_through_a_module_attribute(tmp_path):
    return snakemake_runner.snakemake_cmd(tmp_path, ["-n"])


def _outer_helper(tmp_path):
    return _helper_starting_snakemake(tmp_path)


def _pure(tmp_path):
    return subprocess.run([sys.executable, "-c", "print('snakemake')"], capture_output=True)


def test_runner_calls_are_found_directly_through_attributes_and_through_helpers():
    assert calls_snakemake(_helper_starting_snakemake)
    assert calls_snakemake(_helper_through_a_module_attribute)
    assert calls_snakemake(_outer_helper)
    assert not calls_snakemake(_pure)
    assert not calls_snakemake(test_runner_calls_are_found_directly_through_attributes_and_through_helpers)


def test_suite_tests_that_start_snakemake_are_recognised(request):
    """Directly (scale), through a module helper (presets' _dry_run); this test itself is unmarked."""
    from tests.recipes import test_presets
    from tests.scale import test_dryrun

    assert calls_snakemake(test_dryrun.test_dry_run_lists_shard_jobs_before_ingest)
    assert calls_snakemake(test_presets.test_u2seg_coco_dry_run_is_paper_scale_with_gpu_resources)
    assert not calls_snakemake(test_presets.test_the_three_presets_exist)
    assert request.node.get_closest_marker("snakemake") is None


def test_collection_marked_the_tests_using_a_snakemake_fixture(request):
    """Items of this session that use a reliability run fixture (only those collected here) are marked."""
    fixtures = {"odd_run", "clean_run_a", "clean_run_b", "interrupted_run"}
    for item in request.session.items:
        if fixtures & set(getattr(item, "fixturenames", ())):
            assert item.get_closest_marker("snakemake") is not None, item.nodeid


@pytest.mark.parametrize("cmd,expected", [
    ([sys.executable, "-m", "snakemake", "-n"], True),
    (["/venv/bin/snakemake", "--lint"], True),
    (["bash", "-c", "cd x && snakemake --cores 1"], True),
    ("python -m snakemake -s Snakefile", True),
    ([sys.executable, "-m", "u2seg", "features", "--out", "/w/.snakemake/x"], False),
    (["bash", "-c", "echo snakemake_report.html"], False),
    (["bash", "-c", 'test -n "$J" || { echo "needs a job (snakemake --profile x)"; exit 1; }'], False),
    ("cd /w && SNAKEMAKE_X=1 /venv/bin/snakemake -n | tee log", True),
    ("true; (python3 -m snakemake --version)", True),
    ("set -e\nsnakemake -n", True),
    ("ls .snakemake", False),
])
def test_snakemake_command_lines_are_recognised(cmd, expected):
    assert is_snakemake_command(cmd) is expected


def test_an_unmarked_test_cannot_start_snakemake():
    """This test is not marked `snakemake`, so the guard of tests/conftest.py is active around it."""
    with pytest.raises(UnmarkedSnakemakeRun, match="not marked `snakemake`"):
        subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True)
    # other processes still start
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0


def test_runner_refuses_a_configfile_in_extra(tmp_path, request):
    # building a command counts as starting Snakemake: this test is in the `snakemake` tier
    assert request.node.get_closest_marker("snakemake") is not None
    with pytest.raises(ValueError, match="configfiles="):
        snakemake_runner.snakemake_cmd(tmp_path, ["-n"], extra=["--configfile", "x.yaml"])


def test_configs_are_fresh_copies_and_unknown_names_fail():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert "small" in names
    a = tiny_config("small", dataset="samples")
    a["features"]["input_size"] = 1
    assert tiny_config("small")["features"]["input_size"] != 1 and "dataset" not in tiny_config("small")
    with pytest.raises(FileNotFoundError, match="small"):
        tiny_config("no-such-config")

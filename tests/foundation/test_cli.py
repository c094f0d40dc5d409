"""The CLI: every registered stage imports and documents its options."""
from __future__ import annotations

import subprocess
import sys

import pytest

from u2seg.cli import STAGES, main


def test_top_level_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in STAGES:
        assert name in out


@pytest.mark.slow  # one Python process per stage; while --help imports torch, ~5 s each on 2 cores
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_help(stage):
    proc = subprocess.run([sys.executable, "-m", "u2seg", stage, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"u2seg {stage}" in proc.stdout


def test_unknown_stage_fails():
    assert main(["no-such-stage"]) == 2

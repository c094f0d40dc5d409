"""The CLI: every registered stage imports and documents its options."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from u2seg.cli import STAGES, main


def test_top_level_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in STAGES:
        assert name in out


_HELP = """
import contextlib, io, json, sys
from u2seg.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main([sys.argv[1], "--help"])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "help": out.getvalue(),
                  "heavy": sorted(m for m in ("torch", "torchvision") if m in sys.modules)}))
"""


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_help_is_fast_without_torch(stage):
    """`u2seg <stage> --help` prints the stage's flags without importing torch / torchvision."""
    proc = subprocess.run([sys.executable, "-c", _HELP, stage], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0 and f"u2seg {stage}" in result["help"]
    assert result["heavy"] == [], f"u2seg {stage} --help imports {result['heavy']}"


def test_unknown_stage_fails():
    assert main(["no-such-stage"]) == 2

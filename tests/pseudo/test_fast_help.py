"""``u2seg <stage> --help`` of the pseudo-label and MaskCut stages does not import torch / torchvision."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from u2seg.cli import STAGES

TORCH_FREE_HELP = ["embed", "cluster-instances", "cluster-stuff", "stego", "merge-panoptic", "merge-panoptic-shard",
                   "concat-panoptic", "validate-panoptic", "concat-validation", "maskcut", "merge-masks"]

PROBE = """
import sys
from u2seg.cli import main
try:
    main(sys.argv[1:] + ["--help"])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def help_imports(*argv: str, preamble: str = "") -> tuple[str, str]:
    """(heavy modules loaded, help text) of ``u2seg <argv> --help`` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", preamble + PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("HEAVY="), proc.stdout
    return lines[-1][len("HEAVY="):], "\n".join(lines[:-1])


def test_probe_sees_torch():
    """The probe is not blind: torch loaded before the help is reported."""
    assert help_imports("merge-masks", preamble="import torch\n")[0] == "torch"


@pytest.mark.parametrize("stage", TORCH_FREE_HELP)
def test_stage_help_is_torch_free(stage):
    assert stage in STAGES
    heavy, text = help_imports(stage)
    assert f"u2seg {stage}" in text
    assert heavy == "", f"`u2seg {stage} --help` imported {heavy}"


@pytest.mark.parametrize("action", ["knn", "train", "infer", "import"])
def test_stego_action_help_is_torch_free(action):
    heavy, text = help_imports("stego", action)
    assert "--" in text
    assert heavy == "", f"`u2seg stego {action} --help` imported {heavy}"

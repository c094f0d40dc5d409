"""Safe loading: every checkpoint/weights load refuses pickled code (``torch.load(weights_only=True)``,
a restricted unpickler for detectron2 ``.pkl``), guarded by a source scan and shown by behaviour."""
from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from u2seg.errors import UserError

PACKAGE = REPO / "workflow" / "u2seg"


def _call_name(func: ast.AST) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def unsafe_loads(root: Path) -> list[str]:
    """Calls that can execute pickled code: torch.load without weights_only=True, pickle/joblib/dill
    load(s), numpy load with allow_pickle=True, yaml.load without a safe loader."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node.func)
            where = f"{path.relative_to(root).as_posix()}:{node.lineno}: {name}"
            if name in ("torch.load", "torch.serialization.load") and _kw(node, "weights_only") is not True:
                found.append(where + " without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "joblib.load", "dill.load", "dill.loads",
                          "cloudpickle.load", "cloudpickle.loads", "pandas.read_pickle", "pd.read_pickle"):
                found.append(where)
            elif name in ("np.load", "numpy.load") and _kw(node, "allow_pickle") not in (None, False):
                found.append(where + " with allow_pickle")
            elif name == "yaml.load" and "Safe" not in ast.unparse(node):
                found.append(where + " without a safe loader")
            elif name == "yaml.unsafe_load":
                found.append(where)
    return found


def test_scan_finds_no_unsafe_load_in_the_package():
    assert unsafe_loads(PACKAGE) == []


def test_the_scan_catches_unsafe_calls(tmp_path):
    (tmp_path / "bad.py").write_text(
        "import torch, pickle, numpy as np\n"
        "torch.load('a')\ntorch.load('a', weights_only=False)\npickle.loads(b'')\n"
        "np.load('x', allow_pickle=True)\ntorch.load('a', map_location='cpu', weights_only=True)\n")
    found = unsafe_loads(tmp_path)
    assert [f.split(":")[1] for f in found] == ["2", "3", "4", "5"]


class _Evil:
    """Unpickling this runs ``touch <marker>`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Evil(marker)}, path)
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}, "payload": _Evil(marker)}))
    # sanity: the payload is live, an unrestricted load executes it
    live = tmp_path / "live.pth"
    torch.save({"payload": _Evil(tmp_path / "live-executed")}, live)
    torch.load(live, weights_only=False)
    assert (tmp_path / "live-executed").exists()
    assert not marker.exists()
    return path, pkl, marker


def _loaders():
    from u2seg import backbones
    from u2seg.detector import checkpoint, d2_import, model

    return {
        "detector checkpoint.load": checkpoint.load,
        "detector checkpoint.load_model_file": checkpoint.load_model_file,
        "detector read_backbone_weights": lambda p: model.read_backbone_weights("resnet50", str(p)),
        "d2_import.load_d2_checkpoint": d2_import.load_d2_checkpoint,
        "backbones.build_dino": lambda p: backbones.build_dino("dino_vits16", str(p)),
    }


@pytest.mark.parametrize("loader", list(_loaders()))
def test_pickled_code_in_a_checkpoint_is_refused(evil, loader):
    path, pkl, marker = evil
    for file in (path, pkl) if loader in ("detector read_backbone_weights", "d2_import.load_d2_checkpoint") else (path,):
        with pytest.raises(UserError):
            _loaders()[loader](file)
        assert not marker.exists(), f"{loader} executed pickled code from {file.name}"


def test_a_clean_checkpoint_still_loads(tmp_path):
    from u2seg.detector import checkpoint

    checkpoint.save(tmp_path / "ok.pth", {"model": {"w": torch.arange(3.0)}, "iteration": 5})
    obj = checkpoint.load(tmp_path / "ok.pth")
    assert obj["iteration"] == 5 and torch.equal(obj["model"]["w"], torch.arange(3.0))

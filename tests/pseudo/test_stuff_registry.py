"""The stuff-model registry: one registration per model, the schema's enum follows it, loading by kind."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from u2seg.pseudo.stuff.model import KMeansStuffModel, StuffModel
from u2seg.pseudo.stuff.registry import STUFF_MODELS, load_stuff_model

from tests.conftest import REPO


def test_schema_enum_equals_the_registry():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    stuff = schema["properties"]["stuff"]["properties"]["model"]
    assert stuff["enum"] == list(STUFF_MODELS)
    assert stuff["default"] in STUFF_MODELS


@pytest.mark.parametrize("name", list(STUFF_MODELS))
def test_every_registration_names_a_stuff_model_class(name):
    spec = STUFF_MODELS[name]
    cls = spec.model_class()
    assert issubclass(cls, StuffModel) and cls.kind == spec.kind
    assert cls.from_state is not StuffModel.from_state  # loadable from its saved state
    assert spec.description
    assert spec.per_shard_maps or not spec.needs_training  # a trained model's maps come from per-shard jobs


def test_load_dispatches_on_the_saved_kind(tmp_path):
    model = KMeansStuffModel(k=2, centroids=np.eye(2, 3, dtype=np.float32))
    model.save(tmp_path / "m.npz")
    again = load_stuff_model(tmp_path / "m.npz")
    assert isinstance(again, KMeansStuffModel) and np.array_equal(again.centroids, model.centroids)
    np.savez(tmp_path / "bad.npz", meta=np.array('{"kind": "nope"}'))
    with pytest.raises(ValueError, match="unknown stuff model kind 'nope'"):
        load_stuff_model(tmp_path / "bad.npz")


def test_registry_is_torch_free():
    code = "import sys, u2seg.pseudo.stuff.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

"""The stuff models (config ``stuff.model``): one registration each.

A new stuff model = one sub-package (a :class:`~u2seg.pseudo.stuff.model.StuffModel` subclass with
``kind``, ``state`` and ``from_state``) + one :class:`StuffModelSpec` in :data:`STUFF_MODELS`. Modules are
named, not imported, so that the registry (and ``u2seg cluster-stuff --help``) stays torch-free.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the model modules import torch
    from u2seg.pseudo.stuff.model import StuffModel


@dataclass(frozen=True)
class StuffModelSpec:
    """One stuff model: where its class lives and how the pipeline makes its maps."""

    name: str  # the config value stuff.model
    kind: str  # the ``kind`` in the saved model's meta (several names may share one kind)
    module: str  # module of the StuffModel subclass
    class_name: str  # the subclass; ``from_state`` loads a saved model
    needs_training: bool  # a training job (rules/stego.smk) before the maps
    per_shard_maps: bool  # maps come from per-shard jobs (``u2seg stego infer``) that cluster-stuff gathers
    description: str

    def model_class(self) -> "type[StuffModel]":
        """The StuffModel subclass (imports its module)."""
        return getattr(importlib.import_module(self.module), self.class_name)


STUFF_MODELS: dict[str, StuffModelSpec] = {spec.name: spec for spec in (
    StuffModelSpec("kmeans", "kmeans", "u2seg.pseudo.stuff.model", "KMeansStuffModel", needs_training=False,
                   per_shard_maps=False,
                   description="cosine k-means over sampled dense patch features, fitted in `u2seg cluster-stuff`"),
    StuffModelSpec("stego", "stego", "u2seg.pseudo.stuff.stego.model", "StegoStuffModel", needs_training=True,
                   per_shard_maps=True,
                   description="STEGO head + cluster probe trained on the stored dense features (`u2seg stego`)"),
    StuffModelSpec("stego_checkpoint", "stego", "u2seg.pseudo.stuff.stego.model", "StegoStuffModel",
                   needs_training=False, per_shard_maps=True,
                   description="an official STEGO checkpoint (its own ViT, head and cluster probe)"),
)}


def load_stuff_model(path: str | Path) -> "StuffModel":
    """Load a model saved with :meth:`StuffModel.save` (its meta ``kind`` picks the class)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        arrays = {k: data[k] for k in data.files if k != "meta"}
    for spec in STUFF_MODELS.values():
        if spec.kind == meta.get("kind"):
            return spec.model_class().from_state(meta, arrays)
    raise ValueError(f"{path}: unknown stuff model kind {meta.get('kind')!r}")

"""Re-head a trained U2Seg model for real classes: keep every weight whose shape fits, re-initialise the rest.

The class-specific layers (box classifiers: K + 1 -> C + 1 outputs, mask predictor: K -> C, the semantic
head when the fine-tuning data has no stuff labels) start from their fresh initialisation; everything
else (backbone, FPN, RPN, box/mask towers, class-agnostic box regressors) keeps the U2Seg weights.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from u2seg.detector import checkpoint as ckpt
from u2seg.detector.model import ModelConfig, build_model

log = logging.getLogger(__name__)


def rehead_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
                      ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Copy ``source`` tensors into ``target`` where the key and shape agree (pure).

    Returns (new state dict, copied keys, re-initialised keys).
    """
    out, copied, fresh = {}, [], []
    for key, value in target.items():
        src = source.get(key)
        if src is not None and tuple(src.shape) == tuple(value.shape):
            out[key] = src.clone()
            copied.append(key)
        else:
            out[key] = value.clone()
            if not key.endswith("num_batches_tracked"):
                fresh.append(key)
    return out, copied, fresh


def rehead(model_file: str | Path, num_classes: int, categories: list[dict[str, Any]], out: str | Path,
           num_stuff: int = 0, seed: int = 0) -> dict[str, Any]:
    """Write a model file for ``num_classes`` real classes initialised from a U2Seg model file."""
    obj = ckpt.load_model_file(model_file)
    cfg = dict(obj["model_config"], num_classes=num_classes, num_stuff=num_stuff)
    torch.manual_seed(seed)
    model = build_model(ModelConfig.from_dict(dict(cfg, backbone_weights=None)), load_pretrained=False)
    state, copied, fresh = rehead_state_dict(obj["model"], model.state_dict())
    meta = {"reheaded_from": str(model_file), "copied": len(copied), "reinitialised": fresh}
    ckpt.save_model(out, state, cfg, categories, meta)
    log.info("re-headed %s: %d tensors kept, %d re-initialised (%s)", model_file, len(copied), len(fresh),
             ", ".join(sorted({k.rsplit('.', 1)[0] for k in fresh})))
    return meta

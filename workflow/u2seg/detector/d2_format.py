"""detectron2 file formats without detectron2: safe reading of ``.pth`` / ``.pkl`` weights and the
ResNet key names of detectron2 <-> timm (both directions).

This module imports nothing from the model, so that the model (backbone weights), ``u2seg import-d2``
and ``u2seg export-d2`` can all use it without import cycles.

File layouts read here:
  * ``DetectionCheckpointer.save``: ``torch.save({"model": state_dict, "optimizer": ..., "iteration": ...})``
    (read with ``weights_only=True``; a file holding pickled objects is refused with a fix);
  * detectron2 ``.pkl``: ``pickle.dump({"model": {name: ndarray}, "__author__": str,
    "matching_heuristics": bool})`` (model-zoo weights and ``tools/convert-torchvision-to-d2.py`` output,
    e.g. ``dino_RN50_pretrain_d2_format.pkl``: backbone-only keys such as ``stem.conv1.norm.weight``,
    ``res2.0.conv1.weight``); read with an unpickler that builds numpy arrays and builtins only.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np

from u2seg.detector.d2_keys import BOTTOM_UP, d2_resnet_key_to_timm
from u2seg.errors import UserError
from u2seg.safe_load import load_numpy_pickle

if TYPE_CHECKING:  # torch loads where checkpoints are read, not for `--help` of the stages importing this
    import torch

# Keys of a converted torchvision ResNet that are not part of detectron2's backbone (the classifier).
CLASSIFIER = re.compile(r"^(stem\.)?(fc|linear)\.(weight|bias)$")
NORM_BUFFER = "num_batches_tracked"


def _as_tensor(value: Any) -> torch.Tensor | None:
    """numpy array / scalar / python number -> tensor (None for anything else, e.g. strings)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        return torch.from_numpy(np.array(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(value)
    return None


def _model_dict(obj: Any, path: str | Path) -> dict[str, Any]:
    """The ``model`` entry of a detectron2 file (or the file's dict itself when it has none)."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise UserError(f"{path}: no weights dict inside")
    return obj


def load_d2_pickle(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a detectron2 ``.pkl`` (``{"model": {name: ndarray}, "__author__": ..., ...}`` or a
    plain ``{name: ndarray}``). Metadata entries (``__author__``, ``matching_heuristics``) are skipped."""
    try:
        with open(path, "rb") as fh:
            obj = load_numpy_pickle(fh.read())
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise UserError(f"cannot read detectron2 pickle {path}: {exc}") from exc
    out = {}
    for k, v in _model_dict(obj, path).items():
        t = _as_tensor(v)
        if t is not None and not k.startswith("__"):
            out[k] = t
    if not out:
        raise UserError(f"{path}: the pickle holds no arrays")
    return out


def load_d2_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a detectron2 ``.pth`` (safe load) or ``.pkl`` file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"detectron2 checkpoint not found: {path}")
    if path.suffix == ".pkl":
        return load_d2_pickle(path)
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise UserError(
            f"cannot load {path} safely ({exc}). If it holds optimizer/scheduler objects, keep only its "
            "'model' entry: torch.save({'model': torch.load(p, weights_only=False)['model']}, 'clean.pth') "
            "in an environment you trust.") from exc
    out = {}
    for k, v in _model_dict(obj, path).items():
        t = _as_tensor(v)
        if t is None:
            raise UserError(f"{path}: entry {k!r} of the model state dict is not a tensor ({type(v).__name__})")
        out[k] = t
    return out


# ------------------------------------------------------------------------------------ ResNet keys
def is_d2_resnet(sd: dict[str, Any]) -> bool:
    """Whether the keys are detectron2 ResNet names (with or without ``backbone.bottom_up.``)."""
    return any(k.startswith(("stem.", "res2.", BOTTOM_UP + "stem.", "bottom_up.stem.")) for k in sd)


def d2_resnet_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detectron2 ResNet state dict (e.g. the DINO RN50 d2 .pkl) in timm key names.

    The classifier of a converted torchvision ResNet (``stem.fc.*``) is dropped; BN running stats and
    ``num_batches_tracked`` buffers are kept under their timm names (the backbone loader decides what
    its norm layers take); any other key is an error.
    """
    out, unknown = {}, []
    for k, v in sd.items():
        key = k
        for prefix in (BOTTOM_UP, "bottom_up."):  # ("backbone." may already be stripped)
            key = key[len(prefix):] if key.startswith(prefix) else key
        if CLASSIFIER.match(key):
            continue
        new = d2_resnet_key_to_timm(key)
        if new is None:
            unknown.append(k)
            continue
        out[new] = v
    if unknown:
        raise UserError(f"unrecognised detectron2 ResNet keys: {unknown[:5]} (a backbone-only file holds "
                        "stem.* / res2..res5.* keys only)")
    return out

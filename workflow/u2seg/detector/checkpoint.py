"""Checkpoints: atomic saves of tensors and plain python values; safe loads (``weights_only=True``).

Two kinds of files:
  * training checkpoints ``work/model_{iter:07d}.pth`` (model, optimizer, scheduler, grad scaler,
    iteration, RNG states, config fingerprint) with a ``work/last_checkpoint`` pointer;
  * model files (``model_final.pth``, imported detectron2 weights): ``{"model": state_dict,
    "model_config": dict, "categories": list, "meta": dict}``; ``meta`` says how the model was made
    (``train_config``, ``source``, ...), its ``test_size`` (``{"min_size", "max_size"}``, written since
    u2seg 0.1; older files get the inference defaults) and its evaluation ``metrics`` when known.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from u2seg.atomic import atomic_path, write_text
from u2seg.errors import UserError

log = logging.getLogger(__name__)

POINTER = "last_checkpoint"


def save(path: str | Path, obj: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a dict of tensors / plain python values."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code), UserError on failure."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise UserError(f"cannot load checkpoint {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a checkpoint dict")
    return obj


def rng_state() -> dict[str, Any]:
    """Torch (CPU + CUDA), numpy and python RNG states as tensors / plain values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": np_state[0], "state": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x


def save_training(work_dir: str | Path, iteration: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Save ``work/model_{iteration:07d}.pth``, update the pointer, keep the newest ``keep`` files."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"model_{iteration:07d}.pth"
    save(path, dict(state, iteration=iteration))
    write_text(work / POINTER, path.name + "\n")
    old = sorted(work.glob("model_*.pth"))
    for stale in old[:-keep] if keep > 0 else []:
        stale.unlink(missing_ok=True)
    log.info("checkpoint %s", path)
    return path


def clear_training(work_dir: str | Path) -> None:
    """Remove the training checkpoints and the pointer of ``work_dir`` (a fresh start)."""
    work = Path(work_dir)
    (work / POINTER).unlink(missing_ok=True)
    for path in work.glob("model_*.pth"):
        path.unlink(missing_ok=True)


def latest_training(work_dir: str | Path) -> Path | None:
    """Path of the newest training checkpoint named by the pointer file, or None."""
    pointer = Path(work_dir) / POINTER
    if not pointer.is_file():
        return None
    path = Path(work_dir) / pointer.read_text().strip()
    return path if path.is_file() else None


def save_model(path: str | Path, state_dict: dict[str, torch.Tensor], model_config: dict[str, Any],
               categories: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> None:
    """Write a model file (weights + the config needed to rebuild it + category names + ``meta``, which
    gets the inference defaults' ``test_size`` unless it names one)."""
    meta = dict(meta or {})
    meta.setdefault("test_size", model_test_size({}))
    save(path, {"model": {k: v.detach().cpu() for k, v in state_dict.items()}, "model_config": model_config,
                "categories": categories, "meta": meta})


def model_test_size(obj: dict[str, Any]) -> dict[str, int]:
    """``{"min_size", "max_size"}`` a model file was made for (the inference defaults when it names none)."""
    from u2seg.detector.params import PredictConfig

    stored = (obj.get("meta") or {}).get("test_size") or {}
    return {"min_size": int(stored.get("min_size", PredictConfig.min_size)),
            "max_size": int(stored.get("max_size", PredictConfig.max_size))}


def load_model_file(path: str | Path) -> dict[str, Any]:
    """Read a model file written by :func:`save_model` (or ``u2seg import-d2``)."""
    obj = load(path)
    for key in ("model", "model_config"):
        if key not in obj:
            raise UserError(f"{path}: not a u2seg model file (missing {key!r}); "
                            "detectron2 checkpoints must be converted with `u2seg import-d2` first")
    return obj

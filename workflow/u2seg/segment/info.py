"""``u2seg info MODEL``: what a model file carries (architecture, categories, stuff classes, test size,
pixel statistics, how it was made, metrics), or ``--list``: the named models."""
from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A model (name or path), or --list."""
    parser.add_argument("model", nargs="?", help="a model name, a u2seg model file or a detectron2 checkpoint")
    parser.add_argument("--list", action="store_true", help="list the named models and where they are cached")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")


def config_out(args: argparse.Namespace) -> str | None:
    """None: ``info`` writes no files, so it keeps no resolved-config record."""
    return None


def describe(obj: dict[str, Any]) -> dict[str, Any]:
    """The description of a loaded model file (plain JSON types)."""
    from u2seg.detector.checkpoint import model_test_size
    from u2seg.detector.predict import categories

    cfg = obj["model_config"]
    cats = categories(obj)
    meta = dict(obj.get("meta") or {})
    made = {k: v for k, v in meta.items() if k not in ("test_size", "metrics", "train_config")}
    n_params = sum(int(v.numel()) for v in obj["model"].values() if hasattr(v, "numel"))
    return {
        "architecture": {"backbone": cfg.get("backbone"), "fpn_channels": cfg.get("fpn_channels"),
                         "cascade_stages": len(cfg.get("cascade_ious") or []), "parameters": n_params},
        "things": {"K": int(cfg["num_classes"]), "categories": [(c["id"], c["name"]) for c in cats if c["isthing"]]},
        "stuff": {"S": int(cfg["num_stuff"]), "categories": [(c["id"], c["name"]) for c in cats if not c["isthing"]]},
        "test_size": model_test_size(obj),
        "pixel_mean": cfg.get("pixel_mean"), "pixel_std": cfg.get("pixel_std"),
        "made": made,
        "train_config": meta.get("train_config"),
        "metrics": meta.get("metrics"),
        "model_config": cfg,
    }


def _short(items: list[Any], n: int = 8) -> str:
    text = ", ".join(f"{i}:{name}" for i, name in items[:n])
    return text + (f", ... ({len(items)} in all)" if len(items) > n else "")


def format_description(path: str, info: dict[str, Any]) -> str:
    """Human-readable lines of :func:`describe`."""
    a, t, s = info["architecture"], info["things"], info["stuff"]
    lines = [f"model file: {path}",
             f"architecture: {a['backbone']} FPN({a['fpn_channels']}), {a['cascade_stages']}-stage cascade, "
             f"{a['parameters']:,} parameters",
             f"things: K = {t['K']} ({_short(t['categories'])})",
             f"stuff: S = {s['S']}" + (f" ({_short(s['categories'])})" if s["categories"] else " (no semantic head)"),
             f"test size: short side {info['test_size']['min_size']}, long side <= {info['test_size']['max_size']}",
             f"pixel mean / std (RGB): {info['pixel_mean']} / {info['pixel_std']}"]
    for key, value in info["made"].items():
        lines.append(f"{key}: {json.dumps(value, default=str)}")
    lines.append("training config: " + (json.dumps(info["train_config"], default=str) if info["train_config"]
                                        else "none recorded"))
    lines.append("metrics: " + (json.dumps(info["metrics"], default=str) if info["metrics"] else "none recorded"))
    return "\n".join(lines)


def list_models() -> str:
    """One line per named model: name, kind, where it is (or will be) cached, its source."""
    from u2seg.segment.models import MODELS, cache_dir

    lines = []
    for m in MODELS.values():
        cached = cache_dir() / m.file_name
        state = "cached" if cached.is_file() else ("download on first use" if m.direct else "download by hand")
        lines.append(f"{m.name}  [{m.kind}]  {m.description}\n    {state}: {cached}\n    from {m.url}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the description (or the named models)."""
    from u2seg.detector import checkpoint as ckpt
    from u2seg.errors import UserError
    from u2seg.segment.models import resolve_model

    if args.list:
        print(list_models())
        return 0
    if not args.model:
        raise UserError("give a model (name or path), or --list")
    path = resolve_model(args.model)
    info = describe(ckpt.load_model_file(path))
    print(json.dumps(info, indent=1, default=str) if args.json else format_description(str(path), info))
    return 0

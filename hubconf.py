"""torch.hub entry point: ``torch.hub.load("<this repo>", "u2seg", "model name or path")``.

It returns what ``u2seg.load_model`` returns (a ``Segmenter``: call it on images). The package is taken
from this repository's ``workflow/`` folder when ``u2seg`` is not installed.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

dependencies = ["torch", "torchvision", "timm", "numpy", "PIL", "cv2", "pycocotools", "yaml"]


def u2seg(name_or_path: str, device: str = "auto", **overrides: Any) -> Any:
    """A U2Seg / CutLER model by name (downloaded on first use) or a model file / detectron2 checkpoint;
    ``overrides``: inference settings (``min_size``, ``max_size``, ``batch_size``, ``score_thresh``, ...)."""
    try:
        import u2seg as package
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent / "workflow"))
        import u2seg as package
    return package.load_model(name_or_path, device=device, **overrides)

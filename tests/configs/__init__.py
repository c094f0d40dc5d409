"""Named tiny pipeline configs for the tests (``tests/configs/<name>.yaml``), like detectron2's quick
schedules: one file per config that several tests share, loaded by ``tiny_config``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent


def tiny_config(name: str, **overrides: Any) -> dict[str, Any]:
    """A fresh copy of ``tests/configs/<name>.yaml`` with top-level keys replaced by ``overrides``."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no test config {path.name} in {CONFIG_DIR} (known: {known})")
    config = yaml.safe_load(path.read_text())
    config.update(overrides)
    return config

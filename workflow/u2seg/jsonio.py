"""Reading JSON inputs with a clear error (writing goes through ``u2seg.atomic.write_json``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from u2seg.errors import UserError


def load_json(path: str | Path) -> Any:
    """Read a JSON file; a missing, unreadable or malformed file raises UserError naming it."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise UserError(f"file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc

"""Content fingerprints of what a resumable step reads: it resumes only from state made from the same inputs.

A step records the digests of its inputs, one per named part ("settings", "instances", "semantic", ...),
next to the state it may reuse (a training checkpoint, a cache file). On a rerun it computes them again
and reuses the state only when every part is the same; otherwise :func:`stale_reason` says which parts
changed, for the one log line of a fresh start. Files are read in chunks (streamed), so large inputs cost
one sequential read and little memory. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
DIGEST_SIZE = 16  # bytes of blake2b: 32 hex characters
MISSING = "missing"


def _hasher() -> Any:
    return hashlib.blake2b(digest_size=DIGEST_SIZE)


def file_digest(path: str | Path | None) -> str:
    """Digest of a file's bytes, streamed ('' for None, 'missing' for a path that is not a file)."""
    if path is None:
        return ""
    path = Path(path)
    if not path.is_file():
        return MISSING
    h = _hasher()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def files_digest(named: Iterable[tuple[str, str | Path | None]]) -> str:
    """One digest over (name, file content digest) pairs in the given order (a missing file counts too)."""
    h = _hasher()
    for name, path in named:
        h.update(json.dumps([str(name), file_digest(path)]).encode())
        h.update(b"\n")
    return h.hexdigest()


def folder_digest(folder: str | Path | None, pattern: str = "*") -> str:
    """Digest of the files under ``folder`` matching ``pattern`` (recursive): sorted relative paths and their
    contents ('' for None, 'missing' when the folder does not exist)."""
    if folder is None:
        return ""
    root = Path(folder)
    if not root.is_dir():
        return MISSING
    paths = sorted(p for p in root.rglob(pattern) if p.is_file())
    return files_digest((p.relative_to(root).as_posix(), p) for p in paths)


def chunks_digest(chunks: Iterable[bytes]) -> str:
    """Digest of a stream of byte blocks (e.g. arrays' ``tobytes()`` one at a time); each block's length
    counts too, so the same bytes split differently digest differently."""
    h = _hasher()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return h.hexdigest()


def settings_digest(settings: Any) -> str:
    """Digest of a json-able value (dicts in canonical key order)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    h = _hasher()
    h.update(blob.encode())
    return h.hexdigest()


def combine(parts: Mapping[str, str]) -> str:
    """One digest of all the named parts."""
    return settings_digest(dict(parts))


def changed_parts(recorded: Mapping[str, str] | None, current: Mapping[str, str]) -> list[str]:
    """Names of the parts whose digest differs (or that only one side has), sorted."""
    recorded = recorded or {}
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))


def stale_reason(recorded: Mapping[str, str] | None, current: Mapping[str, str]) -> str | None:
    """None when state recorded with ``recorded`` may be reused for ``current``, else why not (for a log line)."""
    if not recorded:
        return "it records no input fingerprint (written by an older version)"
    changed = changed_parts(recorded, current)
    if not changed:
        return None
    return "its inputs differ: " + ", ".join(changed) + " changed"

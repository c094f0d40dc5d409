"""Digest a pipeline results folder, or compare two digests: are a run's outputs the same as another's?

Used to show that a restructuring changes no output: run the same target before and after on the same
data, digest both result folders and compare them.

    python benchmarks/outputs_digest.py digest results/ > before.json
    python benchmarks/outputs_digest.py compare before.json after.json

Every file under the folder is hashed (SHA-256) except what is expected to differ from run to run: the
trained model files and training work folders (compared through the predictions and metrics they
produce), logs, Snakemake benchmark tables and reports. JSON / JSON-lines files and the arrays of ``.npz``
files are hashed after dropping the keys that hold wall-clock times (``VOLATILE_KEYS``) and after writing
the results folder's own path as ``<results>``, so two runs in different folders compare equal.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

SKIP_SUFFIXES = (".pth", ".pkl", ".pt", ".log", ".tsv", ".html", ".lock")
SKIP_PARTS = ("work", "logs", "benchmarks", ".snakemake", "report")
SKIP_NAMES = (".snakemake_timestamp", "last_run.yaml")
VOLATILE_KEYS = {"seconds", "seconds_total", "seconds_waiting_for_cpu", "seconds_per_image", "seconds_per_iter", "seconds_by_step",
                 "time", "data_time", "elapsed", "timestamp", "date_created", "u2seg_version", "peak_rss_mb"}


def _strip(value: Any, root: str) -> Any:
    """``value`` without the volatile keys and with ``root`` written as ``<results>``, recursively."""
    if isinstance(value, dict):
        return {k: _strip(v, root) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<results>")
    return value


def _json_digest(text: str, root: str) -> str | None:
    """Digest of JSON (or JSON-lines) text without volatile keys; None when it is not JSON."""
    try:
        items = [json.loads(text)]
    except ValueError:
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return None
    return hashlib.sha256(json.dumps(_strip(items, root), sort_keys=True).encode()).hexdigest()


def _npz_digest(path: Path, root: str) -> str:
    """Digest of each array of an ``.npz`` (0-d string arrays, e.g. JSON metadata, as JSON)."""
    import numpy as np

    h = hashlib.sha256()
    with np.load(path, allow_pickle=False) as data:
        for name in sorted(data.files):
            arr = data[name]
            h.update(name.encode())
            if arr.dtype.kind == "U" and arr.ndim == 0:
                h.update((_json_digest(str(arr), root) or str(arr).replace(root, "<results>")).encode())
            else:
                h.update(str((arr.dtype, arr.shape)).encode() + np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def file_digest(path: Path, root: str = "\0") -> str:
    """SHA-256 of a file; of its content without volatile keys for JSON, JSON lines and ``.npz``."""
    if path.suffix in (".json", ".jsonl"):
        try:
            digest = _json_digest(path.read_text(), root)
        except UnicodeDecodeError:
            digest = None
        if digest is not None:
            return digest
    if path.suffix == ".npz":
        return _npz_digest(path, root)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest(root: Path) -> dict[str, str]:
    """``{relative path: digest}`` of every compared file under ``root``."""
    out = {}
    prefix = str(root.resolve())
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (not path.is_file() or path.suffix in SKIP_SUFFIXES or path.name in SKIP_NAMES
                or any(part in SKIP_PARTS for part in rel.parts)):
            continue
        out[str(rel)] = file_digest(path, prefix)
    return out


def compare(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Lines describing every difference (empty when the outputs are the same)."""
    lines = [f"only before: {k}" for k in sorted(before.keys() - after.keys())]
    lines += [f"only after: {k}" for k in sorted(after.keys() - before.keys())]
    lines += [f"differs: {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("digest", help="print the digest json of a results folder")
    d.add_argument("root", type=Path)
    c = sub.add_parser("compare", help="compare two digest jsons; exit 1 on any difference")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "digest":
        json.dump(digest(args.root), sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
    lines = compare(before, after)
    for line in lines:
        print(line)
    print(f"{len(before.keys() & after.keys())} files compared, {len(lines)} differences")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())

"""Digest a pipeline results folder, or compare two digests: are a run's outputs the same as another's?

Used to show that a restructuring changes no output: run the same target before and after on the same
data, digest both result folders and compare them.

    python benchmarks/outputs_digest.py digest results/ > before.json
    python benchmarks/outputs_digest.py compare before.json after.json

Every file under the folder is hashed (SHA-256) except what is expected to differ from run to run: the
trained model files and training work folders (compared through the predictions and metrics they
produce), logs, Snakemake benchmark tables, the resolved-config records and timing fields. JSON files are
hashed after dropping keys that hold wall-clock times or absolute paths (listed in ``VOLATILE_KEYS``).
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
SKIP_NAMES = ("config.json",)
VOLATILE_KEYS = {"seconds", "elapsed", "elapsed_s", "time", "timestamp", "date_created", "wall_s",
                 "duration_s", "images_per_s", "created", "u2seg_version", "host", "path", "root"}


def _strip(value: Any) -> Any:
    """``value`` without the volatile keys, recursively."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def file_digest(path: Path) -> str:
    """SHA-256 of a file (of its JSON content without volatile keys for ``.json``)."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            pass
        else:
            return hashlib.sha256(json.dumps(_strip(data), sort_keys=True).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest(root: Path) -> dict[str, str]:
    """``{relative path: digest}`` of every compared file under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (not path.is_file() or path.suffix in SKIP_SUFFIXES or path.name in SKIP_NAMES
                or any(part in SKIP_PARTS for part in rel.parts)):
            continue
        out[str(rel)] = file_digest(path)
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

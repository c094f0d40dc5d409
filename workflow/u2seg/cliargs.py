"""Command-line flags that many ``u2seg`` stages share (one definition per flag group).

Groups: dataset / shard input (``--manifest``, ``--shard``, ``--shard-size``), device and threads,
progress bar, stuff class count. Stage modules call these instead of writing the flags out.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Union

from u2seg.params import STUFF_CLUSTERS

Parser = Union[argparse.ArgumentParser, argparse._ArgumentGroup]


def add_manifest_argument(parser: Parser, help_text: str = "dataset manifest json (from `u2seg ingest`)",
                          required: bool = True, **kwargs: Any) -> None:
    """``--manifest``: the dataset manifest a stage reads (a Path)."""
    parser.add_argument("--manifest", type=Path, required=required, help=help_text, **kwargs)


def add_shard_arguments(parser: Parser, manifest_help: str = "dataset manifest json (from `u2seg ingest`)") -> None:
    """``--manifest``, ``--shard`` and ``--shard-size``: one shard of a dataset's images."""
    add_manifest_argument(parser, manifest_help)
    parser.add_argument("--shard", type=int, required=True, help="shard index")
    parser.add_argument("--shard-size", type=int, required=True,
                        help="images per shard (shard i = manifest images [i*size, (i+1)*size))")


def add_threads_argument(parser: Parser, help_text: str = "torch CPU threads") -> None:
    """``--threads`` (torch CPU threads; 0 = torch's default)."""
    parser.add_argument("--threads", type=int, default=0, help=f"{help_text} (0: torch's default)")


def add_device_arguments(parser: Parser, default: str = "cpu") -> None:
    """``--device`` (auto / cpu / cuda, default ``default``) and ``--threads`` (torch CPU threads)."""
    parser.add_argument("--device", default=default, choices=["auto", "cpu", "cuda"],
                        help="auto (CUDA when present), cpu or cuda")
    add_threads_argument(parser)


def add_progress_argument(parser: Parser) -> None:
    """``--no-progress``: no progress bar (logs only)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_num_stuff_argument(parser: Parser, help_text: str = "stuff clusters S (config stuff.k)") -> None:
    """``--num-stuff``: the stuff class count (default: COCO-Stuff-27's 27 clusters)."""
    parser.add_argument("--num-stuff", type=int, default=STUFF_CLUSTERS, help=f"{help_text} (default: %(default)s)")

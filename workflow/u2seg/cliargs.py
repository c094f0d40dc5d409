"""Command-line flags that many ``u2seg`` stages share (one definition per flag group).

Groups: dataset / shard input (``--manifest``, ``--shard``, ``--shard-size``), device and threads,
progress bar, stuff class count. Stage modules call these instead of writing the flags out.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Union

from u2seg.params import STUFF_CLUSTERS

Parser = Union[argparse.ArgumentParser, argparse._ArgumentGroup]


MANIFEST_HELP = "dataset manifest json (from `u2seg ingest`)"
SHARD_SIZE_HELP = "images per shard (shard i = manifest images [i*size, (i+1)*size))"


def add_manifest_argument(parser: Parser, help_text: str = MANIFEST_HELP, required: bool = True,
                          cast: Callable[[str], Any] | None = Path, **kwargs: Any) -> None:
    """``--manifest``: the dataset manifest a stage reads or writes (a Path; ``cast=None``: a str)."""
    parser.add_argument("--manifest", type=cast, required=required, help=help_text, **kwargs)


def add_shard_size_argument(parser: Parser, help_text: str = SHARD_SIZE_HELP) -> None:
    """``--shard-size``: images per feature shard (required; config features.shard_size)."""
    parser.add_argument("--shard-size", type=int, required=True, help=help_text)


def add_dataset_arguments(parser: Parser, manifest_help: str = MANIFEST_HELP) -> None:
    """``--manifest`` and ``--shard-size``: a whole dataset read shard by shard."""
    add_manifest_argument(parser, manifest_help)
    add_shard_size_argument(parser)


def add_shard_arguments(parser: Parser, manifest_help: str = MANIFEST_HELP, shard_help: str = "shard index") -> None:
    """``--manifest``, ``--shard`` and ``--shard-size``: one shard of a dataset's images."""
    add_manifest_argument(parser, manifest_help)
    parser.add_argument("--shard", type=int, required=True, help=shard_help)
    add_shard_size_argument(parser)


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


def add_num_stuff_argument(parser: Parser, help_text: str = "stuff clusters S (config stuff.k)",
                           required: bool = False) -> None:
    """``--num-stuff``: the stuff class count (default: COCO-Stuff-27's 27 clusters; none when ``required``)."""
    if required:
        parser.add_argument("--num-stuff", type=int, required=True, help=help_text)
    else:
        parser.add_argument("--num-stuff", type=int, default=STUFF_CLUSTERS, help=f"{help_text} (default: %(default)s)")

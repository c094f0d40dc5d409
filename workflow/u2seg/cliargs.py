"""Command-line flags that many ``u2seg`` stages share."""
from __future__ import annotations

import argparse


def add_device_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str = "cpu") -> None:
    """``--device`` (auto / cpu / cuda, default ``default``) and ``--threads`` (torch CPU threads)."""
    parser.add_argument("--device", default=default, choices=["auto", "cpu", "cuda"],
                        help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")

"""Command-line flags shared by the stuff stages (``u2seg cluster-stuff``, ``u2seg stego infer``).

The CRF flags (one group, :func:`u2seg.cliargs.add_crf_arguments`) default to :data:`u2seg.crf.STEGO_CRF`,
off unless ``--crf`` (config ``stuff.crf``); torch-free.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from u2seg.cliargs import add_crf_arguments as _add_crf_arguments
from u2seg.cliargs import crf_from_args
from u2seg.crf import STEGO_CRF, CRFParams

#: The stuff stages' CRF defaults: the STEGO preset, off unless --crf (config stuff.crf).
STUFF_CRF = replace(STEGO_CRF, enabled=False)


def add_crf_arguments(parser: argparse.ArgumentParser) -> None:
    """The dense-CRF flags (config stuff.crf), defaults = the STEGO preset, off unless ``--crf``."""
    _add_crf_arguments(parser, STUFF_CRF, "refine the maps with a dense CRF", alpha=True)


def crf_params(args: argparse.Namespace) -> CRFParams | None:
    """CRFParams of the CRF flags, None when --crf is off."""
    return crf_from_args(args) if args.crf else None

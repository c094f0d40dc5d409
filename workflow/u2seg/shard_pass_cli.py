"""``u2seg shard-pass``: the fused per-shard pass (see :mod:`u2seg.shard_pass`).

Usage: ``u2seg shard-pass [--no-keep-features] :: features FLAGS :: maskcut FLAGS :: embed FLAGS
[:: stego infer FLAGS]``. Each segment holds exactly the flags the separate stage takes (parsed by that
stage's own parser: one home per flag and default), so the rules pass the same flag strings to the fused
rule as to the separate ones. The shard's features stay in memory and go to MaskCut, embed (and stego
infer) as they are (:class:`u2seg.features.ShardArrays`); the features segment's ``--out`` zarr store is
written only with ``--keep-features``. The stages' resolved-config records are written as the separate
jobs write them.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
from pathlib import Path
from typing import Any

SEPARATOR = "::"
STAGES_IN_ORDER = ("features", "maskcut", "embed", "stego")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-features", action=argparse.BooleanOptionalAction, default=True,
                        help="write the zarr feature shard to the features segment's --out (config "
                             "features.keep_features, or a later step reads it); --no-keep-features: the features "
                             "are held in memory only, no feature file is written")
    parser.add_argument("--stuff-sample", type=Path, default=None,
                        help="k-means stuff model without stored features: write the shard's share of the seeded "
                             "patch sample (.npy float16, the rows `u2seg cluster-stuff` samples) here")
    parser.add_argument("--sample-patches", type=int, default=None,
                        help="with --stuff-sample: patches sampled over the whole dataset (config stuff.sample_patches)")
    parser.add_argument("--sample-seed", type=int, default=None,
                        help="with --stuff-sample: the sample's seed (config stuff.seed)")
    parser.add_argument("segments", nargs=argparse.REMAINDER,
                        help=f"'{SEPARATOR} features FLAGS {SEPARATOR} maskcut FLAGS {SEPARATOR} embed FLAGS "
                             f"[{SEPARATOR} stego infer FLAGS]': the separate stages' own flags")


def config_out(args: argparse.Namespace) -> str | None:
    """No record of its own: the pass writes each stage's record (see :func:`run`)."""
    return None


def split_segments(tokens: list[str]) -> dict[str, list[str]]:
    """``:: stage flags ...`` segments -> {stage: flags} (``stego`` keeps its ``infer`` action)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for tok in tokens:
        if tok == SEPARATOR:
            current = []
            out.setdefault("", [])
            continue
        if current is None:
            raise SystemExit(f"u2seg shard-pass: segments start with {SEPARATOR!r}, got {tok!r}")
        if not current and tok in STAGES_IN_ORDER and tok not in out:
            out[tok] = current
            continue
        current.append(tok)
    out.pop("", None)
    missing = [s for s in STAGES_IN_ORDER[:3] if s not in out]
    if missing:
        raise SystemExit(f"u2seg shard-pass: missing segment(s) {missing}")
    if "stego" in out and out["stego"][:1] != ["infer"]:
        raise SystemExit("u2seg shard-pass: the stego segment must be 'stego infer FLAGS'")
    return out


def _check_same(name: str, *values: object) -> None:
    if len({os.fspath(v) if isinstance(v, Path) else v for v in values}) != 1:
        from u2seg.errors import UserError

        raise UserError(f"shard-pass: the segments disagree on {name}: {values}")


def write_stuff_sample(manifest: dict[str, Any], shard: int, shard_size: int, dense: Any, n_sample: int, seed: int,
                       out: Path) -> None:
    """The shard's share of the k-means stuff sample (u2seg.pseudo.stuff.fused) -> ``out``."""
    from u2seg.pseudo.io import shard_iter
    from u2seg.pseudo.stuff.fused import save_shard_sample, shard_sample_picks, shard_sample_rows

    counts = [len(images) for _, images in shard_iter(manifest, shard_size)]
    picks = shard_sample_picks(counts, dense.shape[2] * dense.shape[3], n_sample, seed, shard)
    save_shard_sample(out, shard_sample_rows(dense, picks))
    log.info("shard-pass: %d stuff sample rows -> %s", len(picks), out)


def run(args: argparse.Namespace) -> int:
    import importlib

    import torch

    from u2seg.backbones import build_backbone
    from u2seg.cli import STAGES, stage_parser
    from u2seg.device import resolve_device
    from u2seg.features import store_shard
    from u2seg.manifest import LoadedManifest, load_manifest
    from u2seg.params import write_resolved_config
    from u2seg.shard_pass import StegoMapWriter, compute_features, shares_forward

    if args.stuff_sample is not None and (args.sample_patches is None or args.sample_seed is None):
        raise SystemExit("u2seg shard-pass: --stuff-sample needs --sample-patches and --sample-seed")
    segments = split_segments(args.segments)
    parsed = {name: stage_parser(name).parse_args(flags) for name, flags in segments.items()}
    modules = {name: importlib.import_module(STAGES[name][0]) for name in parsed}
    fa, ma, ea = parsed["features"], parsed["maskcut"], parsed["embed"]
    sa = parsed.get("stego")
    _check_same("the manifest", fa.manifest, ma.manifest, ea.manifest, *([sa.manifest] if sa else []))
    _check_same("the shard", fa.shard, ea.shard, *([sa.shard] if sa else []))
    _check_same("the shard size", fa.shard_size, ea.shard_size, *([sa.shard_size] if sa else []))
    _check_same("the feature shard", fa.out, ma.features, ea.features, *([sa.features] if sa else []))
    _check_same("the MaskCut json", ma.out, ea.masks)

    if fa.threads > 0:
        torch.set_num_threads(fa.threads)
    manifest = load_manifest(fa.manifest)
    backbone = build_backbone(fa.backbone, fa.weights or None, fa.device)

    stego_writer = None
    with contextlib.ExitStack() as stack:
        if sa is not None and sa.checkpoint is not None:
            from u2seg.atomic import atomic_path
            from u2seg.pseudo.stuff.options import crf_params
            from u2seg.pseudo.stuff.stego.checkpoint import load_stego_checkpoint

            model, tokens = load_stego_checkpoint(sa.checkpoint)
            # the shared forward gives the tokens of the image as the features see it: STEGO's flip averaging
            # and centre-crop view need other forwards (u2seg stego infer's own path)
            view_is_features = not sa.flip and sa.crop == "full" and sa.input_size == fa.input_size
            if view_is_features and shares_forward(backbone, tokens):
                device = resolve_device(sa.device)
                model.head.to(device)
                model.probe.to(device)
                model.device = device
                folder = stack.enter_context(atomic_path(sa.out_maps, directory=True))
                stego_writer = StegoMapWriter(model, crf_params(sa), folder)
                log.info("shard-pass: the STEGO checkpoint's ViT has the feature backbone's weights: one forward")
            else:
                log.info("shard-pass: STEGO's maps need a second forward (%s)", "its ViT differs from the feature "
                         "backbone" if view_is_features else "flip averaging / centre-crop view / input size")
            del tokens
        feats = compute_features(manifest, fa.shard, fa.shard_size, backbone, fa.input_size, fa.batch_size,
                                 Path(fa.out).name, capture_tokens=stego_writer is not None, on_batch=stego_writer)
        if stego_writer is not None:
            stego_writer.finish()
    del backbone
    if args.stuff_sample is not None:
        write_stuff_sample(manifest, fa.shard, fa.shard_size, feats["dense"], args.sample_patches, args.sample_seed,
                           args.stuff_sample)
    if args.keep_features:
        store_shard(fa.out, feats)
    write_resolved_config(modules["features"].config_out(fa), "features", fa)
    calls = [("maskcut", ma), ("embed", ea)] + ([("stego", sa)] if sa is not None and stego_writer is None else [])
    for name, stage_args in calls:
        local = copy.copy(stage_args)
        local.features = feats  # the stages read the in-memory shard as they read the zarr group
        local.manifest = LoadedManifest(stage_args.manifest, manifest)  # and the manifest read once
        result = modules[name].run(local)
        if result:
            return int(result)
        write_resolved_config(modules[name].config_out(stage_args), name, stage_args)
    if stego_writer is not None:
        write_resolved_config(modules["stego"].config_out(sa), "stego", sa)
    log.info("shard-pass: shard %d done (features %s)", fa.shard, fa.out if args.keep_features else "not kept")
    return 0

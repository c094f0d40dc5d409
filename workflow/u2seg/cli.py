"""Command-line entry point: ``u2seg <stage> [options]``.

Each stage lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
modules are imported lazily so ``u2seg --help`` stays fast, and a stage module imports torch only in
``run`` so ``u2seg <stage> --help`` stays fast too. A stage that also has ``config_out(args)`` (the path
of its resolved-config record, or None) gets the parsed flags + u2seg version written there after a
successful run (:func:`u2seg.params.write_resolved_config`).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning. When several jobs share the cores (Snakemake running
# jobs side by side, shared cluster nodes) spinning threads made the MaskCut eigensolver 17x slower
# (two 2-thread processes on 2 cores; docs/benchmarks.md, "Claims checked").
# Set before any stage imports torch; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from u2seg.version import __version__
from u2seg.errors import UserError
from u2seg.params import write_resolved_config

# stage name -> (module, one-line help)
STAGES: dict[str, tuple[str, str]] = {
    "ingest": ("u2seg.ingest", "list a dataset's images into a manifest (robust image reading)"),
    "features": ("u2seg.features", "extract backbone features of one shard into a zarr v3 store"),
    "shard-pass": ("u2seg.shard_pass_cli", "fused per-shard pass: features once, MaskCut, embeddings (+ STEGO maps)"),
    "maskcut": ("u2seg.maskcut.cli", "MaskCut class-agnostic masks for one feature shard"),
    "merge-masks": ("u2seg.maskcut.merge_cli", "merge per-shard MaskCut jsons into one COCO json"),
    "embed": ("u2seg.pseudo.instances.embed_cli", "per-instance embeddings of the MaskCut masks of one shard"),
    "cluster-instances": ("u2seg.pseudo.instances.cluster_cli", "k-means over instance embeddings -> class-aware json"),
    "cluster-stuff": ("u2seg.pseudo.stuff.cli", "k-means over dense patch features -> stuff label maps"),
    "stuff-shard": ("u2seg.pseudo.stuff.shard_cli", "one shard's k-means stuff maps, features recomputed in memory"),
    "stego": ("u2seg.pseudo.stuff.stego.cli", "STEGO stuff model: crop kNN table, head training, per-shard maps"),
    "merge-panoptic": ("u2seg.pseudo.panoptic.merge_cli", "merge instances + stuff into COCO panoptic pseudo-labels"),
    "validate-panoptic": ("u2seg.pseudo.panoptic.validate_cli", "check a COCO panoptic json + PNG folder for consistency"),
    "merge-panoptic-shard": ("u2seg.pseudo.panoptic.shard_cli", "panoptic merge of one shard (parallel jobs)"),
    "concat-panoptic": ("u2seg.pseudo.panoptic.concat_cli", "stream per-shard panoptic merges into one dataset"),
    "concat-validation": ("u2seg.pseudo.panoptic.validate_concat_cli", "combine per-shard validation reports"),
    "train": ("u2seg.detector.train_cli", "train the panoptic cascade mask R-CNN on pseudo-labels"),
    "predict": ("u2seg.detector.predict_cli", "run a trained model: COCO results json + panoptic PNGs"),
    "self-train-labels": ("u2seg.detector.selftrain_cli", "next-round pseudo-labels from predictions"),
    "self-train-ema": ("u2seg.detector.ema_selftrain_cli", "CUPS momentum-teacher self-training from a trained model"),
    "import-d2": ("u2seg.detector.d2_import", "convert a detectron2 U2Seg/CutLER checkpoint"),
    "export-d2": ("u2seg.detector.d2_export", "write a model as a detectron2 checkpoint + config yaml"),
    "evaluate": ("u2seg.evaluation.cli", "class-agnostic / matched AP, PQ and mIoU against COCO GT"),
    "cityscapes-panoptic": ("u2seg.cityscapes_panoptic", "Cityscapes gtFine -> COCO panoptic GT (27 classes)"),
    "zero-shot-table": ("u2seg.evaluation.zero_shot", "one table of a model's metrics across evaluation sets"),
    "finetune": ("u2seg.finetune.cli", "few-shot fine-tuning on a labelled COCO subset"),
    "report": ("u2seg.report.cli", "stage summaries and galleries for the HTML report"),
    "segment": ("u2seg.segment.cli", "segment image files / folders with a model (name or path): overlays + COCO files"),
    "info": ("u2seg.segment.info", "what a model file carries (categories, test size, training config, metrics)"),
}


def stage_parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of stage ``name`` (imports only its module)."""
    module_name, help_text = STAGES[name]
    parser = argparse.ArgumentParser(prog=f"u2seg {name}", description=help_text)
    importlib.import_module(module_name).add_arguments(parser)
    return parser


def stage_defaults() -> dict[str, dict[str, object]]:
    """Every stage's flag defaults (``{stage: {dest: default}}``, JSON types), e.g. to compare installs.

    Sub-command stages (``finetune``, ``report``) list each sub-command as ``<stage> <sub>``.
    """
    out: dict[str, dict[str, object]] = {}

    def collect(key: str, parser: argparse.ArgumentParser) -> None:
        values = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    collect(f"{key} {sub_name}", sub)
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                default = action.default
                values[action.dest] = default if default is None or isinstance(
                    default, (bool, int, float, str, list, dict)) else str(default)
        out[key] = values

    for name in STAGES:
        collect(name, stage_parser(name))
    return out


def build_parser() -> argparse.ArgumentParser:
    """Top-level parser with one sub-command per registered stage (help texts only)."""
    parser = argparse.ArgumentParser(prog="u2seg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"u2seg {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="stage", metavar="<stage>")
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``u2seg <stage> ...`` to the stage module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while argv and argv[0] in ("-v", "--verbose"):
        verbose = True
        argv.pop(0)
    if argv and argv[0] == "--version":
        print(f"u2seg {__version__}")
        return 0
    if not argv or argv[0] not in STAGES:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"u2seg: unknown stage {argv[0]!r}; stages: {', '.join(STAGES)}", file=sys.stderr)
        build_parser().print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(STAGES[name][0])
    args = stage_parser(name).parse_args(rest)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = module.run(args)
    except UserError as exc:  # clear message, no traceback
        logging.getLogger("u2seg").error("%s", exc)
        return 1
    record = module.config_out(args) if not result and hasattr(module, "config_out") else None
    if record:
        write_resolved_config(record, name, args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

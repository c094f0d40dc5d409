# u2seg: unsupervised universal image segmentation (U2Seg) as a resumable Snakemake pipeline.
#   snakemake --cores 2                      # the default target `all` on config `dataset`
#   snakemake --cores 2 extract_features     # one stage's target (see README: Targets)
# The logic lives in the `u2seg` package (workflow/u2seg); rules only call its CLI.
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: f"{workflow.basedir}/config.yaml"


# `snakemake --report` without --config / --configfile: the report of the last successful run
# (its config, recorded by onsuccess below in {results}/last_run.yaml), not of config.yaml's dataset.
from u2seg.next_steps import report_config as _report_config

_last_run = _report_config(sys.argv, str(config.get("results", "results")))
if _last_run:
    print(
        f"u2seg: the report of the last run (dataset {_last_run.get('dataset')!r}; config recorded in "
        f"{config.get('results', 'results')}/last_run.yaml)",
        file=sys.stderr,
    )
    config.update(_last_run)

# Command-line values: `--config 'clustering={"k": 300}'` reaches the config as strings; convert them to
# the schema's types first (u2seg.config_types), so that every key is settable from the command line.
from u2seg.config_types import coerce_with_schema_file

coerce_with_schema_file(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")

# Validate (and fill defaults) before any job runs: unknown keys and bad values fail here, naming the key.
# The jsonschema error (hundreds of lines: schema + config dump) becomes one line: key, value, allowed.
from snakemake.exceptions import WorkflowError

from u2seg.preflight import describe_config_error as _describe_config_error

_config_error = None
try:
    validate(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
except WorkflowError as _exc:
    _config_error = _describe_config_error(_exc)
if _config_error:  # raised outside the handler: Snakemake would print the chained original too
    raise WorkflowError(_config_error)

# ---- reliability: environment checks before any job starts -------------------------
# Missing dataset folder / COCO split, missing local weights file, unwritable results folder:
# fail now, naming the config key (u2seg.preflight; no torch import, cheap enough for every job).
from snakemake.exceptions import WorkflowError

from u2seg.errors import UserError
from u2seg.preflight import check as _preflight_check

try:
    _preflight_check(config)
except UserError as _exc:
    raise WorkflowError(str(_exc))
from u2seg.preflight import download_notices as _download_notices

for _notice in _download_notices(config):  # say what is downloaded, where and how big, before it starts
    print(_notice, file=sys.stderr)
# ---- end reliability block --------------------------------------------------------------------


include: "rules/common.smk"


# The default target: pseudo-labels, the trained model, its predictions and the report pages on `dataset`.
# Afterwards `snakemake --report results/report.html` builds the HTML report of all of it.
rule all:
    """Default target: pseudo-labels, the trained model, its predictions and the report pages on `dataset`."""
    input:
        f"{RES}/{DS}/pseudo/instances.json",
        f"{RES}/{DS}/pseudo/panoptic.json",
        f"{RES}/{DS}/train/r{config['train']['rounds']}/model_final.pth",
        f"{RES}/{DS}/predict/{DS}-r{config['train']['rounds']}/instances_results.json",
        # the report pages of every stage (galleries, summaries, loss curve, evaluation; rules/report.smk)
        lambda wc: report_items(DS),
    default_target: True


include: "rules/ingest.smk"
include: "rules/features.smk"
include: "rules/maskcut.smk"
include: "rules/pseudo_labels.smk"
include: "rules/stego.smk"
include: "rules/shard_pass.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/finetune.smk"
include: "rules/zero_shot.smk"
include: "rules/report.smk"


# The end of a successful run: record its config (for the report) and say where the results are,
# what to open first and how to build the HTML report.
onsuccess:
    from u2seg.next_steps import LAST_RUN, record_run, summary_lines

    _last = record_run(config, f"{RES}/{LAST_RUN}")
    _targets = sorted(workflow.dag_settings.targets) if workflow.dag_settings is not None else []
    print("\n".join(summary_lines(RES, DS, int(config["train"]["rounds"]), _targets, _last)), file=sys.stderr)


# ---- a mistyped target: list the targets instead of "No rule to produce ..." -----------
def _unknown_target(wildcards):
    """Input function of the catch-all rule below: raises (before any job) naming the targets."""
    import difflib

    targets = sorted(
        r.name for r in workflow.rules if (r.docstring or "").lstrip().lower().startswith(("target", "default target"))
    )
    close = difflib.get_close_matches(wildcards.name, targets, n=1)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    raise WorkflowError(
        f"unknown target {wildcards.name!r}.{hint} Targets: {', '.join(targets)} "
        "(snakemake --list-rules explains every rule)"
    )


rule unknown_target:
    """Catch-all for a bare word that is no rule and no file: lists the targets."""
    input:
        _unknown_target,
    output:
        "{name}",
    wildcard_constraints:
        name=r"[A-Za-z][A-Za-z0-9_-]*",

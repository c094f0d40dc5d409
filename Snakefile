# u2seg: unsupervised universal image segmentation (U2Seg) as a resumable Snakemake pipeline.
#   snakemake --cores 2                      # the default target `all` on config `dataset`
#   snakemake --cores 2 extract_features     # one stage's target (see README: Targets)
# The logic lives in the `u2seg` package (workflow/u2seg); rules only call its CLI.
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: f"{workflow.basedir}/config.yaml"


# Command-line values: `--config 'clustering={"k": 300}'` reaches the config as strings; convert them to
# the schema's types first (u2seg.config_types), so that every key is settable from the command line.
from u2seg.config_types import coerce_with_schema_file

coerce_with_schema_file(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")

# Validate (and fill defaults) before any job runs: unknown keys and bad values fail here, naming the key.
validate(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")

# ---- reliability (issue 8): environment checks before any job starts -------------------------
# Missing dataset folder / COCO split, missing local weights file, unwritable results folder:
# fail now, naming the config key (u2seg.preflight; no torch import, cheap enough for every job).
from snakemake.exceptions import WorkflowError

from u2seg.errors import UserError
from u2seg.preflight import check as _preflight_check

try:
    _preflight_check(config)
except UserError as _exc:
    raise WorkflowError(str(_exc))
# ---- end reliability block --------------------------------------------------------------------


include: "rules/common.smk"


# The default target: pseudo-labels, the trained model, its predictions and the report pages on `dataset`.
# Afterwards `snakemake --report results/report.html` builds the HTML report of all of it.
rule all:
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
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/finetune.smk"
include: "rules/report.smk"

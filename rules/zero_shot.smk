# Zero-shot evaluation: train on one dataset's pseudo-labels (`zero_shot.train`, default
# `dataset`), evaluate the final model on every evaluation set (`zero_shot.eval`, default every name
# under `datasets`) and write one table across them (CutLER's class-agnostic columns + U2Seg's).
#   snakemake --cores 2 eval_zero_shot            -> {RES}/zero_shot/{train}-r{n}/table.md + table.json
# Each set's row comes from the `evaluate` rule: {RES}/eval/{set}/{train}-r{n}/metrics.json.

from snakemake.exceptions import WorkflowError

_ZS = config.get("zero_shot") or {}
ZS_TRAIN = _ZS.get("train") or DS
ZS_MODEL = f"{ZS_TRAIN}-r{config['train']['rounds']}"


def zero_shot_sets():
    """The evaluation sets of the zero-shot table (a clear error when there are none)."""
    sets = list(_ZS.get("eval") or DATASETS)
    if not sets:
        raise WorkflowError(
            "eval_zero_shot needs evaluation sets: name them under `datasets` (COCO-format "
            "datasets) or list them in `zero_shot.eval` (e.g. [coco-val])"
        )
    return sets


rule zero_shot_table:
    """One table of the zero-shot model's metrics across every evaluation set."""
    input:
        metrics=lambda wc: [f"{RES}/eval/{s}/{wc.model}/metrics.json" for s in zero_shot_sets()],
    output:
        json=f"{RES}/zero_shot/{{model}}/table.json",
        md=f"{RES}/zero_shot/{{model}}/table.md",
    wildcard_constraints:
        model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=10,
    log:
        f"{RES}/logs/zero_shot/{{model}}.log",
    shell:
        "{U2SEG} zero-shot-table --model {wildcards.model:q} --metrics {input.metrics:q}"
        " --out-json {output.json:q} --out-md {output.md:q} > {log:q} 2>&1"


# Target: the zero-shot table of the model trained on `zero_shot.train` (default `dataset`).
rule eval_zero_shot:
    """Target: train on zero_shot.train's pseudo-labels, evaluate on every zero_shot.eval set, one table."""
    input:
        f"{RES}/zero_shot/{ZS_MODEL}/table.md",

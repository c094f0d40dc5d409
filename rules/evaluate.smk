# Evaluation (docs/method.md §8): class-agnostic + cluster-matched AP, PQ / SQ / RQ, PixelAcc / mIoU against COCO GT.
# Output: {RES}/eval/{ds}/{model}/metrics.json + metrics.md, with {model} a trained model
# ({train ds}-r{n}, predictions from the `predict` rule), `maskcut` (class-agnostic AP of the
# MaskCut masks) or `pseudo` (the pseudo-labels). Target: eval_coco.

_EVAL = f"{RES}/eval/{{ds}}/{{model}}"
_EVAL_CFG = config["evaluate"]


def _matching_flags(name):
    """`u2seg evaluate` flags of one cluster-matching protocol (evaluate.majority / evaluate.hungarian)."""
    cfg = _EVAL_CFG[name]
    return {
        f"{name}_min_score": cfg["min_score"],
        f"{name}_min_iou": cfg["min_iou"],
        f"{name}_iou_type": cfg["iou_type"],
        f"{name}_crowd": "include" if cfg["include_crowd"] else "exclude",
    }


# The protocol parameters of `u2seg evaluate` (evaluate.* and stuff.k) as flags.
_PROTOCOL_FLAGS = config_flags(
    {
        **_matching_flags("majority"),
        **_matching_flags("hungarian"),
        "semantic_vote_iou": _EVAL_CFG["semantic_vote_iou"],
        "max_dets": _EVAL_CFG["max_dets"],
        "num_stuff": config["stuff"]["k"],
        "pq_crowd_rule": _EVAL_CFG["pq_crowd_rule"],
    }
)


def coco_ready_input(wildcards):
    """For coco-* datasets: the marker of `coco_ready` (the COCO root holds the split, downloaded if
    needed). Meant as an input of the `ingest` checkpoint."""
    if wildcards.ds in (COCO_TRAIN, COCO_VAL):
        return [f"{RES}/coco/{wildcards.ds.split('-', 1)[1]}_ready.json"]
    return []


# Make sure coco_root holds {split}2017/ + annotations (downloads what is missing; never deletes).
# A local rule: on a cluster the download runs where Snakemake runs (compute nodes are often offline).
localrules:
    coco_ready,


def _coco_root_checked(wildcards):
    """No inputs; raises (while the DAG is built, before any job) when coco_root lacks the split and
    `evaluate.download` is off: a typo in coco_root must not start a download."""
    from u2seg.preflight import check_coco

    found = check_coco(config, wildcards.split)
    if found:
        raise WorkflowError("configuration cannot run:\n  - " + "\n  - ".join(found))
    return []


rule coco_ready:
    """Check that coco_root holds COCO {split}2017 (downloads it only with evaluate.download: true)."""
    input:
        _coco_root_checked,
    output:
        f"{RES}/coco/{{split}}_ready.json",
    wildcard_constraints:
        split="train|val",
    params:
        root=config["coco_root"],
        no_download="" if _EVAL_CFG["download"] else "--no-download",
        panoptic="--with-panoptic" if _EVAL_CFG["download_panoptic"] else "",
        timeout=_EVAL_CFG["download_timeout"],
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=600,
    log:
        f"{RES}/logs/coco/{{split}}_ready.log",
    benchmark:
        f"{RES}/benchmarks/coco/{{split}}_ready.tsv"
    shell:
        "{U2SEG} evaluate --download-coco {params.root:q} --split {wildcards.split} {params.no_download}"
        " {params.panoptic} --timeout {params.timeout:q} --ready {output:q} > {log:q} 2>&1"


# A trained model's predictions on dataset {ds}.
rule evaluate:
    """AP / PQ / mIoU of a trained model's predictions on dataset {ds} -> results/eval/{ds}/{model}/metrics.json + .md."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        instances=f"{RES}/{{ds}}/predict/{{model}}/instances_results.json",
        panoptic=f"{RES}/{{ds}}/predict/{{model}}/panoptic.json",
    output:
        json=f"{_EVAL}/metrics.json",
        md=f"{_EVAL}/metrics.md",
    wildcard_constraints:
        model=r"(?!maskcut$|pseudo$)[^/]+",
    params:
        predictions=lambda wc: f"{RES}/{wc.ds}/predict/{wc.model}",
        extra=lambda wc: " ".join(f"--protocol {shlex.quote(p)}" for p in dataset_protocols(wc.ds)),
        protocol=_PROTOCOL_FLAGS,
    threads: 2
    resources:
        mem_mb=mem_mb(4000),
        runtime=120,
    log:
        f"{RES}/logs/eval/{{ds}}/{{model}}.log",
    benchmark:
        f"{RES}/benchmarks/eval/{{ds}}/{{model}}.tsv"
    shell:
        "{U2SEG} evaluate --manifest {input.manifest:q} --predictions {params.predictions:q}"
        " --dataset {wildcards.ds:q} --model {wildcards.model:q} {params.protocol} {params.extra}"
        " --workers {threads} --out-json {output.json:q} --out-md {output.md:q} > {log:q} 2>&1"


# CutLER's "MaskCut" row: class-agnostic AP / AR of the MaskCut masks of dataset {ds}.
rule evaluate_maskcut:
    """CutLER's MaskCut row: class-agnostic AP / AR of the MaskCut masks of dataset {ds}."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        masks=f"{RES}/{{ds}}/maskcut/masks.json",
    output:
        json=f"{RES}/eval/{{ds}}/maskcut/metrics.json",
        md=f"{RES}/eval/{{ds}}/maskcut/metrics.md",
    params:
        max_dets=_EVAL_CFG["max_dets"],
    threads: 1
    resources:
        mem_mb=mem_mb(3000),
        runtime=60,
    log:
        f"{RES}/logs/eval/{{ds}}/maskcut.log",
    benchmark:
        f"{RES}/benchmarks/eval/{{ds}}/maskcut.tsv"
    shell:
        "{U2SEG} evaluate --manifest {input.manifest:q} --instances {input.masks:q} --class-agnostic-only"
        " --max-dets {params.max_dets:q} --dataset {wildcards.ds:q} --model maskcut"
        " --out-json {output.json:q} --out-md {output.md:q} > {log:q} 2>&1"


# The pseudo-labels of dataset {ds} evaluated as predictions (instances, panoptic, semantic).
rule evaluate_pseudo:
    """The pseudo-labels of dataset {ds} evaluated as predictions (instances, panoptic, semantic)."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        instances=f"{RES}/{{ds}}/pseudo/instances.json",
        panoptic=f"{RES}/{{ds}}/pseudo/panoptic.json",
    output:
        json=f"{RES}/eval/{{ds}}/pseudo/metrics.json",
        md=f"{RES}/eval/{{ds}}/pseudo/metrics.md",
    params:
        panoptic_dir=lambda wc: f"{RES}/{wc.ds}/pseudo/panoptic",
        semantic_dir=lambda wc: f"{RES}/{wc.ds}/pseudo/semantic",
        extra=lambda wc: " ".join(f"--protocol {shlex.quote(p)}" for p in dataset_protocols(wc.ds)),
        protocol=_PROTOCOL_FLAGS,
    threads: 2
    resources:
        mem_mb=mem_mb(4000),
        runtime=120,
    log:
        f"{RES}/logs/eval/{{ds}}/pseudo.log",
    benchmark:
        f"{RES}/benchmarks/eval/{{ds}}/pseudo.tsv"
    shell:
        "{U2SEG} evaluate --manifest {input.manifest:q} --instances {input.instances:q}"
        " --panoptic-json {input.panoptic:q} --panoptic-dir {params.panoptic_dir:q}"
        " --semantic-dir {params.semantic_dir:q} --dataset {wildcards.ds:q} --model pseudo {params.protocol}"
        " {params.extra}"
        " --workers {threads} --out-json {output.json:q} --out-md {output.md:q} > {log:q} 2>&1"


# Target: the whole chain on `coco_root` (pseudo-labels on train2017, training, prediction on val2017,
# evaluation) plus the MaskCut row on val2017. Missing COCO data is downloaded when allowed.
rule eval_coco:
    """Target: the whole chain on COCO (pseudo-labels on train2017, training, prediction and evaluation on val2017)."""
    input:
        f"{RES}/coco/train_ready.json",
        f"{RES}/coco/val_ready.json",
        f"{RES}/eval/{COCO_VAL}/{COCO_TRAIN}-r{config['train']['rounds']}/metrics.json",
        f"{RES}/eval/{COCO_VAL}/maskcut/metrics.json",

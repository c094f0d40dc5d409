# Self-training (docs/method.md §7): train the Panoptic Cascade Mask R-CNN in rounds r1, r2, ... (train.rounds),
# predict with any trained (or imported) model on any dataset. Targets: train, predictions.
#   round 1:  pseudo/instances.json + pseudo/semantic/          -> train/r1/model_final.pth
#   round n:  predict/{ds}-r{n-1}/instances_results.json + labels of round n-1
#             -> train/r{n}/pseudo_instances.json -> train/r{n}/model_final.pth (initialised from r{n-1})
# Resumable checkpoints live in train/r{n}/work/ (not declared: a rerun continues from them).

import re

from snakemake.exceptions import WorkflowError

from u2seg.detector.launch import check_batch, launch_prefix, slurm_resources
from u2seg.errors import UserError

_ROUNDS = int(config["train"]["rounds"])
_SELF = config["train"].get("self_training", {})
# train.* keys that are not `u2seg train` flags
_TRAIN_NOT_FLAGS = {"rounds", "threads", "self_training", "gpus", "nodes", "master_port"}
# Multi-process training (u2seg.detector.launch): train.gpus processes on each of train.nodes nodes.
_GPUS, _NODES = int(config["train"].get("gpus", 1)), int(config["train"].get("nodes", 1))
try:
    check_batch(config["train"]["batch_size"], _GPUS, _NODES)
except UserError as _exc:
    raise WorkflowError(str(_exc))
_LAUNCH = launch_prefix(shlex.quote(sys.executable), _GPUS, _NODES, config["train"].get("master_port", 29500))
_TRAIN_RESOURCES = slurm_resources(_GPUS, _NODES, config["train"]["device"], config["train"]["threads"])
# self_training.* keys that override train.* / model.* for rounds >= 2
_SELF_LABEL_KEYS = ("score_thresholds", "iou_thresh", "max_per_image")
_MODEL_FILE = re.compile(rf"^({DS_PATTERN})-r([1-9]\d*)$")  # DS_PATTERN: every dataset key (common.smk)
_CUPS_FILE = re.compile(rf"^({DS_PATTERN})-cups$")  # CUPS self-training's student (rule self_train_cups)
# Self-training method (docs/selftrain.md): cutler = rounds r2.. above; cups = rule self_train_cups after r1
_METHOD = config.get("selftrain", {}).get("method", "cutler")
_CUPS = config.get("selftrain", {}).get("cups", {})
if _METHOD == "cups":
    try:
        check_batch(_CUPS.get("batch_size", 16), _GPUS, _NODES)
    except UserError as _exc:
        raise WorkflowError(f"selftrain.cups.batch_size (not train.batch_size): {_exc}")
# the final model of the configured method: its predict name and its file
_FINAL_MODEL = "cups" if _METHOD == "cups" else f"r{_ROUNDS}"


def _round_settings(n):
    """(model flags, solver flags) of round n: config model/train, with self_training overrides for n >= 2."""
    model = dict(config["model"])
    train = {k: v for k, v in config["train"].items() if k not in _TRAIN_NOT_FLAGS}
    if n >= 2:
        for key, value in _SELF.items():
            if key in _SELF_LABEL_KEYS:
                continue
            if key in model:
                model[key] = value
            else:
                train[key] = value
    model["num_classes"] = config["clustering"]["k"]  # one source of truth for K
    model["num_stuff"] = config["stuff"]["k"]
    return config_flags(model), config_flags(train)


def _labels_of_round(ds, n):
    """Instance labels round n trains on."""
    if n == 1:
        return f"{RES}/{ds}/pseudo/instances.json"
    return f"{RES}/{ds}/train/r{n}/pseudo_instances.json"


def _train_inputs(wc):
    n = int(wc.n)
    if n > _ROUNDS:
        raise ValueError(f"round r{n} > train.rounds={_ROUNDS}")
    inputs = {
        "manifest": f"{RES}/{wc.ds}/manifest.json",
        "instances": _labels_of_round(wc.ds, n),
        "semantic": f"{RES}/{wc.ds}/pseudo/semantic",
        "validation": f"{RES}/{wc.ds}/pseudo/validation.json",
    }
    if n > 1:
        inputs["init"] = f"{RES}/{wc.ds}/train/r{n - 1}/model_final.pth"
    return inputs


def _model_file(wc):
    """Weights of predict model `{train ds}-r{n}`, or an imported model {RES}/models/{model}.pth."""
    m = _MODEL_FILE.match(wc.model)
    if m:
        return f"{RES}/{m.group(1)}/train/r{m.group(2)}/model_final.pth"
    m = _CUPS_FILE.match(wc.model)
    if m:
        return f"{RES}/{m.group(1)}/train/cups/model_final.pth"
    return f"{RES}/models/{wc.model}.pth"


def _gpu(section):
    """`gpu` resource from ``config[section]["device"]`` (common.smk's rule: 1 only for explicit cuda)."""
    return gpu_request(config[section]["device"])


rule train_round:
    """One self-training round {n} of the panoptic Cascade Mask R-CNN on the pseudo-labels."""
    input:
        unpack(_train_inputs),
    output:
        model=f"{RES}/{{ds}}/train/r{{n}}/model_final.pth",
        metrics=f"{RES}/{{ds}}/train/r{{n}}/metrics.jsonl",
        plot=f"{RES}/{{ds}}/train/r{{n}}/loss.png",
        summary=f"{RES}/{{ds}}/train/r{{n}}/summary.json",
    wildcard_constraints:
        n=r"[1-9]\d*",
    params:
        out_dir=lambda wc: f"{RES}/{wc.ds}/train/r{wc.n}",
        init=lambda wc, input: f"--init {shlex.quote(input.init)}" if int(wc.n) > 1 else "",
        model=lambda wc: _round_settings(int(wc.n))[0],
        solver=lambda wc: _round_settings(int(wc.n))[1],
        # `u2seg train`, or torchrun / srun + torchrun starting train.gpus x train.nodes processes
        launch=_LAUNCH,
        threads=config["train"]["threads"],  # per process
    # CPU threads of every process x processes per node (one node's cores)
    threads: config["train"]["threads"] * _GPUS
    resources:
        **_TRAIN_RESOURCES,
        mem_mb=mem_mb(8000 * _GPUS),
        runtime=24 * 60,
        # gpu (-> sbatch --gpus) / gres, cpus_per_gpu, nodes, tasks: u2seg.detector.launch.slurm_resources
    log:
        f"{RES}/logs/{{ds}}/train/r{{n}}.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/train/r{{n}}.tsv"
    shell:
        "{params.launch} train --instances {input.instances:q} --semantic-dir {input.semantic:q}"
        " --manifest {input.manifest:q} --out-dir {params.out_dir:q} {params.init}"
        " {params.model} {params.solver} --threads {params.threads} --no-progress > {log:q} 2>&1"


rule self_train_labels:
    """Next round's pseudo-labels from the previous round's predictions (self-training)."""
    input:
        predictions=lambda wc: f"{RES}/{wc.ds}/predict/{wc.ds}-r{int(wc.n) - 1}/instances_results.json",
        previous=lambda wc: _labels_of_round(wc.ds, int(wc.n) - 1),
    output:
        f"{RES}/{{ds}}/train/r{{n}}/pseudo_instances.json",
    wildcard_constraints:
        n=r"[2-9]|[1-9]\d+",
    params:
        # unset keys keep the CLI defaults (u2seg.detector.params.SelfTrainParams)
        flags=config_flags({k: _SELF[k] for k in _SELF_LABEL_KEYS if k in _SELF}),
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=60,
    log:
        f"{RES}/logs/{{ds}}/train/labels_r{{n}}.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/train/labels_r{{n}}.tsv"
    shell:
        "{U2SEG} self-train-labels --predictions {input.predictions:q} --previous {input.previous:q}"
        " --round {wildcards.n} {params.flags} --out {output:q} > {log:q} 2>&1"


rule self_train_cups:
    """CUPS's momentum-teacher self-training (selftrain.cups) from round 1's model: train/cups/."""
    input:
        init=f"{RES}/{{ds}}/train/r1/model_final.pth",
        instances=f"{RES}/{{ds}}/pseudo/instances.json",
        manifest=f"{RES}/{{ds}}/manifest.json",
    output:
        model=f"{RES}/{{ds}}/train/cups/model_final.pth",
        teacher=f"{RES}/{{ds}}/train/cups/teacher_final.pth",
        metrics=f"{RES}/{{ds}}/train/cups/metrics.jsonl",
        summary=f"{RES}/{{ds}}/train/cups/summary.json",
        plot=f"{RES}/{{ds}}/train/cups/loss.png",
    params:
        out_dir=lambda wc: f"{RES}/{wc.ds}/train/cups",
        # unset keys keep the CLI defaults (u2seg.detector.params.CupsSelfTrainParams)
        flags=config_flags(_CUPS, exclude={"threads"}),
        launch=_LAUNCH,
        threads=_CUPS.get("threads", 2),
    threads: _CUPS.get("threads", 2) * _GPUS
    resources:
        **slurm_resources(_GPUS, _NODES, _CUPS.get("device", "auto"), _CUPS.get("threads", 2)),
        mem_mb=mem_mb(10000 * _GPUS),
        runtime=24 * 60,
    log:
        f"{RES}/logs/{{ds}}/train/cups.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/train/cups.tsv"
    shell:
        "{params.launch} self-train-ema --init {input.init:q} --instances {input.instances:q}"
        " --manifest {input.manifest:q} --out-dir {params.out_dir:q} {params.flags}"
        " --threads {params.threads} --no-progress > {log:q} 2>&1"


rule predict:
    """Predictions of a trained model on dataset {ds}: instances, panoptic and semantic outputs."""
    input:
        weights=_model_file,
        manifest=f"{RES}/{{ds}}/manifest.json",
    output:
        results=f"{RES}/{{ds}}/predict/{{model}}/instances_results.json",
        panoptic_json=f"{RES}/{{ds}}/predict/{{model}}/panoptic.json",
        panoptic=directory(f"{RES}/{{ds}}/predict/{{model}}/panoptic"),
        semantic=directory(f"{RES}/{{ds}}/predict/{{model}}/semantic"),
        summary=f"{RES}/{{ds}}/predict/{{model}}/summary.json",
    wildcard_constraints:
        model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    params:
        out_dir=lambda wc: f"{RES}/{wc.ds}/predict/{wc.model}",
        flags=config_flags(config["predict"], exclude={"threads"}),
    threads: config["predict"]["threads"]
    resources:
        # + the manifest and the detections of every image; per pixel of the largest image (full-size outputs)
        mem_mb=declared_mem(
            PREDICT_BASE_MB,
            per_image_kb=MANIFEST_KB_PER_IMAGE + PREDICT_KB_PER_IMAGE,
            per_pixel_b=PREDICT_B_PER_PIXEL,
            pixels_unknown=PREDICT_PIXELS_UNKNOWN,
        ),
        runtime=12 * 60,
        gpu=_gpu("predict"),
    log:
        f"{RES}/logs/{{ds}}/predict/{{model}}.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/predict/{{model}}.tsv"
    shell:
        "{U2SEG} predict --weights {input.weights:q} --manifest {input.manifest:q}"
        " --out-dir {params.out_dir:q} {params.flags} --threads {threads} --no-progress > {log:q} 2>&1"


# Target: the final model of the configured dataset (selftrain.method cups: CUPS self-training's student).
rule train:
    """Target: the final model of the configured dataset (round train.rounds, or train/cups)."""
    input:
        f"{RES}/{DS}/train/{_FINAL_MODEL}/model_final.pth",


# Target: predictions of the final model on the configured dataset.
rule predictions:
    """Target: predictions of the final model on the configured dataset."""
    input:
        f"{RES}/{DS}/predict/{DS}-{_FINAL_MODEL}/instances_results.json",
        f"{RES}/{DS}/predict/{DS}-{_FINAL_MODEL}/panoptic.json",

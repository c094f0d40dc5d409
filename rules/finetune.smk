# Few-shot fine-tuning (docs/method.md §7.4): the U2Seg model trained on coco-train pseudo-labels as the
# initialisation for a small labelled subset of coco-train, against a baseline initialised from the
# backbone's own weights, same schedule; both evaluated with standard COCO AP on coco-val.
# Target `finetune` -> {RES}/finetune/{tag}/comparison.md (tag = frac{fraction}-seed{seed} or custom-seed{seed}).

_FT = config["finetune"]
_FT_TAG = f"custom-seed{_FT['seed']}" if _FT["annotations"] else f"frac{config['fraction']}-seed{_FT['seed']}"
_FT_DIR = f"{RES}/finetune/{_FT_TAG}"
# solver keys of `finetune` that override `train`
_FT_SOLVER = {"base_lr", "max_iter", "steps", "gamma", "warmup_iters", "batch_size"}


def _finetune_flags():
    """(model flags, solver flags) for `u2seg train`: config model/train with the finetune overrides."""
    model = dict(config["model"], num_stuff=0)  # instance labels only: no semantic head
    train = {k: v for k, v in config["train"].items() if k not in _TRAIN_NOT_FLAGS}
    train.update({k: _FT[k] for k in _FT_SOLVER})
    train["checkpoint_period"] = max(1, min(int(train["checkpoint_period"]), int(_FT["max_iter"])))
    return config_flags(model), config_flags(train)


rule finetune_split:
    """Seeded labelled subset of COCO train (finetune.seed, fraction) + its category coverage."""
    input:
        manifest=f"{RES}/{COCO_TRAIN}/manifest.json",
    output:
        labelled=f"{_FT_DIR}/labelled.json",
        coverage=f"{_FT_DIR}/coverage.json",
    params:
        fraction=config["fraction"],
        seed=_FT["seed"],
        explicit=f"--labelled-json {shlex.quote(str(_FT['annotations']))}" if _FT["annotations"] else "",
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=30,
    log:
        f"{RES}/logs/finetune/{_FT_TAG}/split.log",
    benchmark:
        f"{RES}/benchmarks/finetune/{_FT_TAG}/split.tsv"
    shell:
        "{U2SEG} finetune split --manifest {input.manifest:q} {params.explicit}"
        " --fraction {params.fraction} --seed {params.seed}"
        " --out {output.labelled:q} --coverage {output.coverage:q} > {log:q} 2>&1"


rule finetune_rehead:
    """The U2Seg model re-headed for the labelled classes (the fine-tuning start point)."""
    input:
        model=f"{RES}/{COCO_TRAIN}/train/r{config['train']['rounds']}/model_final.pth",
        labelled=f"{_FT_DIR}/labelled.json",
    output:
        f"{_FT_DIR}/u2seg_init.pth",
    params:
        seed=config["train"]["seed"],
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=30,
    log:
        f"{RES}/logs/finetune/{_FT_TAG}/rehead.log",
    benchmark:
        f"{RES}/benchmarks/finetune/{_FT_TAG}/rehead.tsv"
    shell:
        "{U2SEG} finetune rehead --model {input.model:q} --labelled {input.labelled:q}"
        " --seed {params.seed} --out {output:q} > {log:q} 2>&1"


def _finetune_train_inputs(wc):
    inputs = {"labelled": f"{_FT_DIR}/labelled.json", "manifest": f"{RES}/{COCO_TRAIN}/manifest.json"}
    if wc.init == "u2seg":
        inputs["init"] = f"{_FT_DIR}/u2seg_init.pth"
    return inputs


rule finetune_train:
    """Few-shot fine-tuning on the labelled subset from one initialisation (U2Seg or backbone)."""
    input:
        unpack(_finetune_train_inputs),
    output:
        model=f"{_FT_DIR}/{{init}}/model_final.pth",
        metrics=f"{_FT_DIR}/{{init}}/metrics.jsonl",
    wildcard_constraints:
        init="u2seg|baseline",
    params:
        out_dir=lambda wc: f"{_FT_DIR}/{wc.init}",
        init=lambda wc, input: f"--init {shlex.quote(input.init)}" if wc.init == "u2seg" else "",
        model=_finetune_flags()[0],
        solver=_finetune_flags()[1],
        num_classes=lambda wc, input: len(json.load(open(input.labelled))["categories"]),
    threads: config["train"]["threads"]
    resources:
        mem_mb=mem_mb(8000),
        runtime=24 * 60,
        gpu=_gpu("train"),
    log:
        f"{RES}/logs/finetune/{_FT_TAG}/train_{{init}}.log",
    benchmark:
        f"{RES}/benchmarks/finetune/{_FT_TAG}/train_{{init}}.tsv"
    shell:
        "{U2SEG} train --instances {input.labelled:q} --manifest {input.manifest:q}"
        " --out-dir {params.out_dir:q} {params.init} {params.model} {params.solver}"
        " --num-classes {params.num_classes} --threads {threads} --no-progress > {log:q} 2>&1"


rule finetune_predict:
    """Predictions of a fine-tuned model on COCO val."""
    input:
        weights=f"{_FT_DIR}/{{init}}/model_final.pth",
        manifest=f"{RES}/{COCO_VAL}/manifest.json",
    output:
        results=f"{_FT_DIR}/{{init}}/predict/instances_results.json",
    wildcard_constraints:
        init="u2seg|baseline",
    params:
        out_dir=lambda wc: f"{_FT_DIR}/{wc.init}/predict",
        flags=config_flags(config["predict"], exclude={"threads"}),
    threads: config["predict"]["threads"]
    resources:
        mem_mb=mem_mb(6000),
        runtime=12 * 60,
        gpu=_gpu("predict"),
    log:
        f"{RES}/logs/finetune/{_FT_TAG}/predict_{{init}}.log",
    benchmark:
        f"{RES}/benchmarks/finetune/{_FT_TAG}/predict_{{init}}.tsv"
    shell:
        "{U2SEG} predict --weights {input.weights:q} --manifest {input.manifest:q}"
        " --out-dir {params.out_dir:q} {params.flags} --threads {threads} > {log:q} 2>&1"


rule finetune_evaluate:
    """Standard COCO AP of a fine-tuned model's predictions on COCO val."""
    input:
        predictions=f"{_FT_DIR}/{{init}}/predict/instances_results.json",
        labelled=f"{_FT_DIR}/labelled.json",
        manifest=f"{RES}/{COCO_VAL}/manifest.json",
    output:
        f"{_FT_DIR}/{{init}}/metrics.json",
    wildcard_constraints:
        init="u2seg|baseline",
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=60,
    log:
        f"{RES}/logs/finetune/{_FT_TAG}/evaluate_{{init}}.log",
    benchmark:
        f"{RES}/benchmarks/finetune/{_FT_TAG}/evaluate_{{init}}.tsv"
    shell:
        "{U2SEG} finetune evaluate --predictions {input.predictions:q} --labelled {input.labelled:q}"
        " --manifest {input.manifest:q} --init-name {wildcards.init} --out {output:q} > {log:q} 2>&1"


# Target: both rows (U2Seg init vs backbone-init baseline) in one table.
rule finetune:
    """Target: U2Seg init vs backbone-init baseline after few-shot fine-tuning, in one table."""
    input:
        metrics=[f"{_FT_DIR}/u2seg/metrics.json", f"{_FT_DIR}/baseline/metrics.json"],
        coverage=f"{_FT_DIR}/coverage.json",
    output:
        md=f"{_FT_DIR}/comparison.md",
        json=f"{_FT_DIR}/comparison.json",
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=10,
    log:
        f"{RES}/logs/finetune/{_FT_TAG}/compare.log",
    benchmark:
        f"{RES}/benchmarks/finetune/{_FT_TAG}/compare.tsv"
    shell:
        "{U2SEG} finetune compare --metrics {input.metrics:q} --coverage {input.coverage:q}"
        " --out-md {output.md:q} --out-json {output.json:q} > {log:q} 2>&1"

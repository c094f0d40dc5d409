# Inspection report: every stage's summary, gallery, the loss curve and the evaluation
# tables as `report()` items of Snakemake's HTML report, one category per stage.
#   snakemake --cores 2 inspect                            # run the pipeline + make the report items
#   snakemake inspect --report results/report.html         # write the self-contained HTML report
# The stages' own rule files are not touched: the rules below take their galleries / summary.json
# as inputs and write the report items under {RES}/report/{ds}/<stage>/ (`u2seg report <item>`).


report: "../docs/report/workflow.rst"


_REP = f"{RES}/report/{{ds}}"
# the trained runs the report shows: rounds r1..r{train.rounds}, or r1 + CUPS self-training (train/cups)
_REP_RUNS = ["r1", "cups"] if _METHOD == "cups" else [f"r{n}" for n in range(1, _ROUNDS + 1)]
_CAT_FEATURES = "1. Ingest and features"
_CAT_MASKCUT = "2. MaskCut"
_CAT_PSEUDO = "3. Pseudo-labels"
_CAT_TRAIN = "4. Training"
_CAT_PREDICT = "5. Predictions"
_CAT_EVAL = "6. Evaluation"


def has_ground_truth(ds):
    """Whether dataset ``ds`` has COCO instance or panoptic annotations (read from its ingest manifest)."""
    with open(checkpoints.ingest.get(ds=ds).output.manifest) as fh:
        manifest = json.load(fh)
    return bool(manifest.get("annotations") or manifest.get("panoptic"))


def evaluated_metrics(ds):
    """metrics.md files the report's evaluation page shows for dataset ``ds`` ([] without GT)."""
    if not has_ground_truth(ds):
        return []
    model = f"{ds}-{_FINAL_MODEL}"
    files = [f"{RES}/eval/{ds}/{m}/metrics.md" for m in ("maskcut", "pseudo", model)]
    if ds == COCO_TRAIN:  # the paper's protocol: trained on train2017, evaluated on val2017
        files.append(f"{RES}/eval/{COCO_VAL}/{model}/metrics.md")
    return files


def report_items(ds):
    """Every report item of dataset ``ds`` (the `inspect` target)."""
    rep = f"{RES}/report/{ds}"
    model = f"{ds}-{_FINAL_MODEL}"
    items = [
        f"{RES}/{ds}/ingest_summary.json",
        f"{rep}/features/summary.html",
        f"{rep}/maskcut/summary.html",
        f"{rep}/maskcut/gallery",
        f"{rep}/pseudo/summary.html",
        f"{rep}/pseudo/gallery",
        f"{rep}/predict/{model}/summary.html",
        f"{rep}/predict/{model}/gallery",
        f"{rep}/evaluation/metrics.html",
    ]
    for run in _REP_RUNS:
        items += [f"{rep}/train/{run}/summary.html", f"{rep}/train/{run}/loss.png"]
    return items


# The feature shards of dataset {ds}, one path per line: `report features` reads them from this file,
# so its command line does not grow with the dataset.
localrules:
    feature_shard_list,


rule feature_shard_list:
    """The list of feature shards of dataset {ds} (one path per line) for the report."""
    input:
        per_shard(f"{RES}/{{ds}}/features/shard_{{shard}}.zarr"),
    output:
        f"{RES}/report/{{ds}}/features/shards.txt",
    run:
        from u2seg.atomic import write_text

        write_text(output[0], "".join(f"{p}\n" for p in input))


rule report_features:
    """Report page: images, skipped files and feature shards of dataset {ds}."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        skipped=f"{RES}/{{ds}}/skipped.json",
        features=per_shard(f"{RES}/{{ds}}/features/shard_{{shard}}.zarr"),
        shard_list=f"{RES}/report/{{ds}}/features/shards.txt",
    output:
        json=f"{RES}/{{ds}}/ingest_summary.json",
        html=report(
            f"{_REP}/features/summary.html",
            caption="../docs/report/features.rst",
            category=_CAT_FEATURES,
            subcategory="summary",
            labels={"dataset": "{ds}", "page": "images, skipped files, feature shards"},
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=10,
    log:
        f"{RES}/logs/{{ds}}/report/features.log",
    shell:
        "{U2SEG} report features --dataset {wildcards.ds:q} --manifest {input.manifest:q}"
        " --skipped {input.skipped:q} --features-from {input.shard_list:q}"
        " --out-json {output.json:q} --out-html {output.html:q} > {log:q} 2>&1"


rule report_maskcut:
    """Report page + gallery of the MaskCut masks of dataset {ds}."""
    input:
        summary=f"{RES}/{{ds}}/maskcut/summary.json",
        gallery=f"{RES}/{{ds}}/maskcut/gallery",
    output:
        html=report(
            f"{_REP}/maskcut/summary.html",
            caption="../docs/report/maskcut.rst",
            category=_CAT_MASKCUT,
            subcategory="summary",
            labels={"dataset": "{ds}", "page": "masks per image, timings, gallery thumbnails"},
        ),
        gallery=report(
            directory(f"{_REP}/maskcut/gallery"),
            patterns=["{image}.jpg"],
            caption="../docs/report/maskcut.rst",
            category=_CAT_MASKCUT,
            subcategory="gallery",
            labels={"image": "{image}", "dataset": "{ds}"},
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=10,
    log:
        f"{RES}/logs/{{ds}}/report/maskcut.log",
    shell:
        "{U2SEG} report stage --stage maskcut --title 'MaskCut: {wildcards.ds}'"
        " --summary {input.summary:q} --gallery {input.gallery:q}"
        " --out-gallery {output.gallery:q} --out-html {output.html:q} > {log:q} 2>&1"


rule report_pseudo:
    """Report page + gallery of the pseudo-labels of dataset {ds}."""
    input:
        summary=f"{RES}/{{ds}}/pseudo/summary.json",
        gallery=f"{RES}/{{ds}}/pseudo/gallery",
        validation=f"{RES}/{{ds}}/pseudo/validation.json",
        panoptic=f"{RES}/{{ds}}/pseudo/panoptic.json",
    output:
        html=report(
            f"{_REP}/pseudo/summary.html",
            caption="../docs/report/pseudo.rst",
            category=_CAT_PSEUDO,
            subcategory="summary",
            labels={"dataset": "{ds}", "page": "cluster sizes, instances, stuff, gallery thumbnails"},
        ),
        gallery=report(
            directory(f"{_REP}/pseudo/gallery"),
            patterns=["{image}.jpg"],
            caption="../docs/report/pseudo.rst",
            category=_CAT_PSEUDO,
            subcategory="gallery",
            labels={"image": "{image}", "dataset": "{ds}"},
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=10,
    log:
        f"{RES}/logs/{{ds}}/report/pseudo.log",
    shell:
        "{U2SEG} report stage --stage pseudo --title 'Pseudo-labels: {wildcards.ds}'"
        " --summary {input.summary:q} --extra validation={input.validation:q} --gallery {input.gallery:q}"
        " --panoptic-json {input.panoptic:q}"
        " --out-gallery {output.gallery:q} --out-html {output.html:q} > {log:q} 2>&1"


rule report_train:
    """Report page + loss curve of training run {run} (round r{n} or CUPS self-training, cups) on dataset {ds}."""
    input:
        summary=f"{RES}/{{ds}}/train/{{run}}/summary.json",
        metrics=f"{RES}/{{ds}}/train/{{run}}/metrics.jsonl",
        plot=f"{RES}/{{ds}}/train/{{run}}/loss.png",
    output:
        html=report(
            f"{_REP}/train/{{run}}/summary.html",
            caption="../docs/report/train.rst",
            category=_CAT_TRAIN,
            subcategory="summary",
            labels={"round": "{run}", "dataset": "{ds}"},
        ),
        plot=report(
            f"{_REP}/train/{{run}}/loss.png",
            caption="../docs/report/train.rst",
            category=_CAT_TRAIN,
            subcategory="loss curve",
            labels={"round": "{run}", "dataset": "{ds}"},
        ),
    wildcard_constraints:
        run=r"r[1-9]\d*|cups",
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=10,
    log:
        f"{RES}/logs/{{ds}}/report/train_{{run}}.log",
    shell:
        "{U2SEG} report train --title 'Training {wildcards.run}: {wildcards.ds}'"
        " --summary {input.summary:q} --metrics {input.metrics:q} --plot {input.plot:q}"
        " --out-plot {output.plot:q} --out-html {output.html:q} > {log:q} 2>&1"


rule report_predictions:
    """Report page + gallery of a model's predictions on dataset {ds}."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        results=f"{RES}/{{ds}}/predict/{{model}}/instances_results.json",
        panoptic=f"{RES}/{{ds}}/predict/{{model}}/panoptic.json",
        panoptic_dir=f"{RES}/{{ds}}/predict/{{model}}/panoptic",
        summary=f"{RES}/{{ds}}/predict/{{model}}/summary.json",
    output:
        html=report(
            f"{_REP}/predict/{{model}}/summary.html",
            caption="../docs/report/predict.rst",
            category=_CAT_PREDICT,
            subcategory="summary",
            labels={"model": "{model}", "dataset": "{ds}"},
        ),
        gallery=report(
            directory(f"{_REP}/predict/{{model}}/gallery"),
            patterns=["{image}.jpg"],
            caption="../docs/report/predict.rst",
            category=_CAT_PREDICT,
            subcategory="gallery",
            labels={"image": "{image}", "model": "{model}", "dataset": "{ds}"},
        ),
    wildcard_constraints:
        model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    params:
        pred_dir=lambda wc: f"{RES}/{wc.ds}/predict/{wc.model}",
        flags=config_flags(
            {
                "gallery_size": config["maskcut"]["gallery_size"],
                "seed": config["maskcut"]["seed"],
                # the panoptic fusion's instance threshold: tta_score_thresh when predicting with TTA
                "score_thresh": config["predict"][
                    "tta_score_thresh" if config["predict"]["tta"] else "instance_score_thresh"
                ],
                "k": config["clustering"]["k"],
                "num_stuff": config["stuff"]["k"],
            }
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    log:
        f"{RES}/logs/{{ds}}/report/predict_{{model}}.log",
    shell:
        "{U2SEG} report predictions --title 'Predictions of {wildcards.model} on {wildcards.ds}'"
        " --manifest {input.manifest:q} --predictions {params.pred_dir:q}"
        " {params.flags}"
        " --out-gallery {output.gallery:q} --out-html {output.html:q} > {log:q} 2>&1"


rule report_evaluation:
    """Report page: the AP / PQ / mIoU tables of dataset {ds} (or why there are none)."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        metrics=lambda wc: evaluated_metrics(wc.ds),
    output:
        html=report(
            f"{_REP}/evaluation/metrics.html",
            caption="../docs/report/evaluation.rst",
            category=_CAT_EVAL,
            subcategory="tables",
            labels={"dataset": "{ds}", "page": "AP / PQ / mIoU tables"},
        ),
    params:
        metrics=lambda wc, input: " ".join(shlex.quote(str(f)) for f in input.metrics),
        reason=lambda wc: (
            f"dataset {wc.ds!r} has no ground truth (its manifest lists no COCO annotations); "
            "run on COCO (dataset: coco, or the eval_coco target) for AP / PQ / mIoU"
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=10,
    log:
        f"{RES}/logs/{{ds}}/report/evaluation.log",
    shell:
        "{U2SEG} report evaluation --title 'Evaluation: {wildcards.ds}' --metrics {params.metrics}"
        " --reason {params.reason:q} --out-html {output.html:q} > {log:q} 2>&1"


# Target: every report item of the configured dataset; then
#   snakemake inspect --report results/report.html
rule inspect:
    """Target: every report page of the configured dataset; then `snakemake --report results/report.html`."""
    input:
        lambda wc: report_items(DS),

# STEGO stuff model (stuff.model: stego | stego_checkpoint): the crop kNN table, head training
# (resumable; GPU when features.device finds one) and per-shard stuff maps, which `stuff_maps`
# gathers into the same pseudo/stuff/, stuff_model.npz and stuff_summary.json as the k-means model.

from u2seg.pseudo.stuff.registry import STUFF_MODELS

_STEGO = f"{RES}/{{ds}}/pseudo/stego"
_SG = config["stuff"]["stego"]

if config["stuff"]["model"] == "stego_checkpoint" and not config["stuff"]["checkpoint"]:
    raise WorkflowError(
        "stuff.model: stego_checkpoint needs stuff.checkpoint (path or URL of an official STEGO "
        ".ckpt, e.g. cocostuff27_vit_base_5.ckpt)"
    )


def stego_stuff_inputs(wildcards):
    """Extra inputs of `stuff_maps`: nothing for kmeans, the per-shard maps + model for stego*."""
    if not STUFF_MODELS[config["stuff"]["model"]].per_shard_maps:
        return []
    base = f"{RES}/{wildcards.ds}/pseudo/stego"
    return [f"{base}/model.npz"] + [f"{base}/maps/shard_{s}" for s in shard_ids(wildcards.ds)]


def stego_stuff_flags(wildcards):
    """cluster-stuff flags of the stuff model (shell-quoted)."""
    model = config["stuff"]["model"]
    if not STUFF_MODELS[model].per_shard_maps:
        return f"--model {model}"
    base = f"{RES}/{wildcards.ds}/pseudo/stego"
    return (
        f"--model {model} --stego-maps-dir {shlex.quote(base + '/maps')}"
        f" --stego-model {shlex.quote(base + '/model.npz')}"
    )


rule stego_knn:
    """STEGO: the crop kNN table over the dataset's global feature descriptors."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        features=per_shard(f"{RES}/{{ds}}/features/shard_{{shard}}.zarr"),
    output:
        f"{_STEGO}/knn.npz",
    params:
        features_dir=lambda wc: f"{RES}/{wc.ds}/features",
        shard_size=config["features"]["shard_size"],
        crop_type=_SG["crop_type"],
        crop_ratio=_SG["crop_ratio"],
        knn=_SG["knn"],
        device=config["features"]["device"],
    threads: 2
    resources:
        mem_mb=mem_mb(3000),
        runtime=120,
    log:
        f"{RES}/logs/{{ds}}/pseudo/stego_knn.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/stego_knn.tsv"
    shell:
        "{U2SEG} stego knn --manifest {input.manifest:q} --shard-size {params.shard_size:q}"
        " --features-dir {params.features_dir:q} --crop-type {params.crop_type:q} --crop-ratio {params.crop_ratio:q}"
        " --knn {params.knn:q} --device {params.device:q} --threads {threads} --out {output:q} > {log:q} 2>&1"


_STEGO_TRAIN_FLAGS = " ".join(
    f"--{key.replace('_', '-')} {shlex.quote(str(_SG[key]))}"
    for key in (
        "dim",
        "batch_size",
        "max_steps",
        "num_neighbors",
        "seed",
        "checkpoint_period",
        "log_period",
        "dropout",
        "lr",
        "cluster_lr",
        "pos_intra_weight",
        "pos_inter_weight",
        "neg_inter_weight",
        "pos_intra_shift",
        "pos_inter_shift",
        "neg_inter_shift",
        "feature_samples",
        "neg_samples",
        "preload_mb",
    )
) + "".join(
    f" --{'' if _SG[key] else 'no-'}{key.replace('_', '-')}"
    for key in ("pointwise", "zero_clamp", "stabilize", "dropout_target")
)


rule stego_train:
    """STEGO: train the segmentation head + cluster probe without labels (resumable; loss curve)."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        features=per_shard(f"{RES}/{{ds}}/features/shard_{{shard}}.zarr"),
        knn=f"{_STEGO}/knn.npz",
    output:
        model=f"{_STEGO}/trained.npz",
        history=f"{_STEGO}/train_history.json",
        curve=report(f"{_STEGO}/loss.png", category="3. Pseudo-labels", caption="../docs/report/stego_loss.rst"),
    params:
        features_dir=lambda wc: f"{RES}/{wc.ds}/features",
        work_dir=lambda wc: f"{RES}/{wc.ds}/pseudo/stego/work",
        shard_size=config["features"]["shard_size"],
        k=config["stuff"]["k"],
        flags=_STEGO_TRAIN_FLAGS,
        device=config["features"]["device"],
    threads: 2
    resources:
        mem_mb=mem_mb(6000),
        runtime=24 * 60,
        gpu=gpu_request(config["features"]["device"]),
    log:
        f"{RES}/logs/{{ds}}/pseudo/stego_train.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/stego_train.tsv"
    shell:
        "{U2SEG} stego train --manifest {input.manifest:q} --shard-size {params.shard_size:q}"
        " --features-dir {params.features_dir:q} --knn-table {input.knn:q} --k {params.k:q} {params.flags}"
        " --device {params.device:q} --threads {threads} --work-dir {params.work_dir:q}"
        " --out-model {output.model:q} --out-history {output.history:q} --out-curve {output.curve:q} > {log:q} 2>&1"


# The head + cluster probe the maps are made with: trained here, or imported from the official checkpoint.
rule stego_model:
    """STEGO: the head + cluster probe the maps are made with (trained here, or the official checkpoint)."""
    input:
        lambda wc: [f"{RES}/{wc.ds}/pseudo/stego/trained.npz"] if config["stuff"]["model"] == "stego" else [],
    output:
        f"{_STEGO}/model.npz",
    params:
        model=config["stuff"]["model"],
        checkpoint=config["stuff"]["checkpoint"] or "",
    threads: 1
    resources:
        mem_mb=mem_mb(3000),
        runtime=60,
    log:
        f"{RES}/logs/{{ds}}/pseudo/stego_model.log",
    shell:
        "if [ {params.model:q} = stego ]; then cp {input:q} {output:q}; "
        "else {U2SEG} stego import --checkpoint {params.checkpoint:q} --out {output:q} > {log:q} 2>&1; fi"


def stego_infer_args(wildcards, features, model, out_maps, threads):
    """The flags of `u2seg stego infer` for one shard (the separate rule and the fused pass)."""
    q = lambda v: shlex.quote(str(v))
    stuff = config["stuff"]
    if stuff["model"] == "stego_checkpoint":
        source = f"--checkpoint {q(stuff['checkpoint'] or '')} --input-size {config['features']['input_size']}"
        source += " " + config_flags(stuff["stego_inference"])
    else:
        source = f"--model {q(model)}"
    return (
        f"--manifest {q(f'{RES}/{wildcards.ds}/manifest.json')} --shard {int(wildcards.shard)}"
        f" --shard-size {q(config['features']['shard_size'])} --features {q(features)} {source}"
        + (" --crf" if stuff["crf"]["enabled"] else "")
        + "".join(f" --crf-{k.replace('_', '-')} {q(v)}" for k, v in stuff["crf"].items() if k != "enabled")
        + f" --device {q(config['features']['device'])} --threads {threads} --out-maps {q(out_maps)}"
    )


rule stego_infer:
    """STEGO: stuff label maps of one feature shard from the cluster probe."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        features=f"{RES}/{{ds}}/features/shard_{{shard}}.zarr",
        model=f"{_STEGO}/model.npz",
    output:
        directory(f"{_STEGO}/maps/shard_{{shard}}"),
    params:
        args=lambda wc, input, output, threads: stego_infer_args(wc, input.features, input.model, output[0], threads),
    threads: 2
    resources:
        mem_mb=mem_mb(4000),
        runtime=120,
        gpu=gpu_request(config["features"]["device"]),
    log:
        f"{RES}/logs/{{ds}}/pseudo/stego_infer_{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/stego_infer_{{shard}}.tsv"
    shell:
        "{U2SEG} stego infer {params.args} > {log:q} 2>&1"

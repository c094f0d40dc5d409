# Feature extraction: one zarr v3 store per shard of `features.shard_size` images.

_features_out = directory(f"{RES}/{{ds}}/features/shard_{{shard}}.zarr")


rule features_shard:
    """Backbone features of one shard of images -> a zarr v3 store (dense features, global embeddings)."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
    output:
        _features_out if config["features"]["keep_features"] else temp(_features_out),
    params:
        shard=lambda wc: int(wc.shard),
        shard_size=config["features"]["shard_size"],
        backbone=config["backbone"],
        weights=config["weights"] or "",
        flags=config_flags({k: config["features"][k] for k in ("input_size", "batch_size", "device", "loader_workers")}),
    # torch's threads; the loader threads (features.loader_workers) decode beside them: one core each beyond 1
    threads: max(2, 1 + config["features"]["loader_workers"])
    resources:
        mem_mb=declared_mem(4000, per_image_kb=MANIFEST_KB_PER_IMAGE),
        runtime=declared_runtime(30, per_shard_image_s=0.5),
        gpu=gpu_request(config["features"]["device"]),
    log:
        f"{RES}/logs/{{ds}}/features/shard_{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/features/shard_{{shard}}.tsv"
    shell:
        "{U2SEG} features --manifest {input.manifest:q} --shard {params.shard}"
        " --shard-size {params.shard_size} --backbone {params.backbone:q}"
        " --weights={params.weights:q}"
        " {params.flags}"
        " --threads {threads} --out {output:q} > {log:q} 2>&1"


# Target: every feature shard of the configured dataset.
rule extract_features:
    """Target: every feature shard of the configured dataset."""
    input:
        lambda wc: [f"{RES}/{DS}/features/shard_{s}.zarr" for s in shard_ids(DS)],

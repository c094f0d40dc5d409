# Feature extraction: one zarr v3 store per shard of `features.shard_size` images.

_features_out = directory(f"{RES}/{{ds}}/features/shard_{{shard}}.zarr")


def features_args(wildcards, out, threads):
    """The flags of `u2seg features` for one shard (the separate rule and the fused pass)."""
    f = config["features"]
    return (
        f"--manifest {shlex.quote(f'{RES}/{wildcards.ds}/manifest.json')} --shard {int(wildcards.shard)}"
        f" --shard-size {f['shard_size']} --backbone {shlex.quote(config['backbone'])}"
        f" --weights={shlex.quote(config['weights'] or '')}"
        + " " + config_flags({k: f[k] for k in ("input_size", "batch_size", "device", "loader_workers")})
        + f" --threads {threads} --out {shlex.quote(str(out))}"
    )


rule features_shard:
    """Backbone features of one shard of images -> a zarr v3 store (dense features, global embeddings)."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
    output:
        _features_out if config["features"]["keep_features"] else temp(_features_out),
    params:
        args=lambda wc, output, threads: features_args(wc, output[0], threads),
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
        "{U2SEG} features {params.args} > {log:q} 2>&1"


# Target: every feature shard of the configured dataset.
rule extract_features:
    """Target: every feature shard of the configured dataset."""
    input:
        lambda wc: [f"{RES}/{DS}/features/shard_{s}.zarr" for s in shard_ids(DS)],

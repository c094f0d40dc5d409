# Ingestion: one manifest per dataset (a checkpoint: the number of feature shards depends on it).


checkpoint ingest:
    """List the dataset's readable images into a manifest (skipped files and reasons in skipped.json)."""
    input:
        # COCO datasets: the root holds the split (downloaded first when absent; rules/evaluate.smk)
        lambda wc: coco_ready_input(wc),
    output:
        manifest=f"{RES}/{{ds}}/manifest.json",
        skipped=f"{RES}/{{ds}}/skipped.json",
    params:
        dataset=dataset_args,
        samples_dir=lambda wc: f"{RES}/{wc.ds}/images",
        flags=config_flags({k: config["ingest"][k] for k in ("max_side", "min_side", "max_skipped_fraction")}),
    threads: 2
    resources:
        # measured per listed image (docs/benchmarks.md "Scale")
        mem_mb=declared_mem(INGEST_BASE_MB, per_image_kb=INGEST_KB_PER_IMAGE),
        runtime=declared_runtime(60, per_image_s=INGEST_S_PER_IMAGE),
    log:
        f"{RES}/logs/{{ds}}/ingest.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/ingest.tsv"
    shell:
        "{U2SEG} ingest {params.dataset} --samples-dir {params.samples_dir:q}"
        " {params.flags} --workers {threads}"
        " --manifest {output.manifest:q} --skipped {output.skipped:q} > {log:q} 2>&1"

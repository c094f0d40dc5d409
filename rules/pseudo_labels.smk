# Pseudo-labels (docs/method.md §4-§6): per-shard instance embeddings, instance clustering (K = clustering.k),
# stuff clustering (stuff.k), the panoptic merge and a format check. Target: pseudo_labels.

_PSEUDO = f"{RES}/{{ds}}/pseudo"


def embed_args(wildcards, masks, features, out, threads):
    """The flags of `u2seg embed` for one shard (the separate rule and the fused pass)."""
    q = lambda v: shlex.quote(str(v))
    emb, bg = config["embedding"], config["embedding"]["background"]
    return (
        f"--manifest {q(f'{RES}/{wildcards.ds}/manifest.json')} --shard {int(wildcards.shard)}"
        f" --shard-size {q(config['features']['shard_size'])} --masks {q(masks)} --features {q(features)}"
        f" --method {q(emb['method'])} --backbone {q(config['backbone'])} --weights={q(config['weights'] or '')}"
        f" --background {q(bg[0])} {q(bg[1])} {q(bg[2])} --margin {q(emb['margin'])}"
        f" --crop-size {q(emb['crop_size'])} --batch-size {q(emb['batch_size'])}"
        f" --device {q(config['features']['device'])} --threads {threads} --out {q(out)}"
    )


rule embed:
    """One embedding per MaskCut mask of one shard (embedding.method)."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        masks=f"{RES}/{{ds}}/maskcut/shard_{{shard}}.json",
        features=f"{RES}/{{ds}}/features/shard_{{shard}}.zarr",
    output:
        f"{_PSEUDO}/embed/shard_{{shard}}.npz",
    params:
        args=lambda wc, input, output, threads: embed_args(wc, input.masks, input.features, output[0], threads),
    threads: 2
    resources:
        mem_mb=declared_mem(3000, per_image_kb=MANIFEST_KB_PER_IMAGE),
        runtime=declared_runtime(30, per_shard_image_s=1.0),
    log:
        f"{RES}/logs/{{ds}}/pseudo/embed_{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/embed_{{shard}}.tsv"
    shell:
        "{U2SEG} embed {params.args} > {log:q} 2>&1"


rule cluster_instances:
    """k-means over the instance embeddings (clustering.k) -> class-aware instances.json."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        embeddings=per_shard(f"{RES}/{{ds}}/pseudo/embed/shard_{{shard}}.npz"),
        masks=per_shard(f"{RES}/{{ds}}/maskcut/shard_{{shard}}.json"),
    output:
        instances=f"{_PSEUDO}/instances.json",
        centroids=f"{_PSEUDO}/centroids.npy",
        summary=f"{_PSEUDO}/cluster_summary.json",
        # the same annotations split per shard (+ index.json), read by the per-shard panoptic jobs
        shards=directory(f"{_PSEUDO}/instances_shards"),
    params:
        embed_dir=lambda wc: f"{RES}/{wc.ds}/pseudo/embed",
        masks_dir=lambda wc: f"{RES}/{wc.ds}/maskcut",
        shard_size=config["features"]["shard_size"],
        k=config["clustering"]["k"],
        iterations=config["clustering"]["iterations"],
        seed=config["clustering"]["seed"],
        chunk_size=config["clustering"]["chunk_size"],
        device=config["features"]["device"],
    threads: 2
    resources:
        # measured per image (docs/benchmarks.md "Scale"); the k-means fit: benchmarks/cluster.py
        mem_mb=declared_mem(CLUSTER_BASE_MB, per_image_kb=CLUSTER_KB_PER_IMAGE),
        runtime=declared_runtime(240, per_image_s=CLUSTER_S_PER_IMAGE),
    log:
        f"{RES}/logs/{{ds}}/pseudo/cluster_instances.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/cluster_instances.tsv"
    shell:
        "{U2SEG} cluster-instances --manifest {input.manifest:q} --shard-size {params.shard_size:q}"
        " --embed-dir {params.embed_dir:q} --masks-dir {params.masks_dir:q} --k {params.k:q}"
        " --iterations {params.iterations:q} --seed {params.seed:q} --chunk-size {params.chunk_size:q}"
        " --device {params.device:q} --threads {threads} --out-instances {output.instances:q}"
        " --out-centroids {output.centroids:q} --summary {output.summary:q}"
        " --out-shards {output.shards:q} > {log:q} 2>&1"


rule stuff_maps:
    """The stuff label maps (stuff.k clusters): k-means fitted and applied here, or the per-shard STEGO
    maps (rules/stego.smk) gathered; `u2seg cluster-stuff` either way."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        # the k-means model reads the feature shards; the stego* models only their per-shard maps
        features=lambda wc: (
            []
            if STUFF_MODELS[config["stuff"]["model"]].per_shard_maps
            else per_shard(f"{RES}/{{ds}}/features/shard_{{shard}}.zarr")(wc)
        ),
        stego=lambda wc: stego_stuff_inputs(wc),  # stuff.model stego*: per-shard maps (rules/stego.smk)
    output:
        model=f"{_PSEUDO}/stuff_model.npz",
        maps=directory(f"{_PSEUDO}/stuff"),
        summary=f"{_PSEUDO}/stuff_summary.json",
    params:
        features_dir=lambda wc: f"{RES}/{wc.ds}/features",
        shard_size=config["features"]["shard_size"],
        k=config["stuff"]["k"],
        sample_patches=config["stuff"]["sample_patches"],
        iterations=config["stuff"]["iterations"],
        seed=config["stuff"]["seed"],
        chunk_size=config["clustering"]["chunk_size"],
        crf="--crf" if config["stuff"]["crf"]["enabled"] else "",
        crf_gsxy=config["stuff"]["crf"]["gaussian_sxy"],
        crf_gcompat=config["stuff"]["crf"]["gaussian_compat"],
        crf_bsxy=config["stuff"]["crf"]["bilateral_sxy"],
        crf_bsrgb=config["stuff"]["crf"]["bilateral_srgb"],
        crf_bcompat=config["stuff"]["crf"]["bilateral_compat"],
        crf_iters=config["stuff"]["crf"]["iterations"],
        crf_alpha=config["stuff"]["crf"]["alpha"],
        device=config["features"]["device"],
        model=lambda wc: stego_stuff_flags(wc),
    threads: 2
    resources:
        mem_mb=mem_mb(4000),
        runtime=240,
    log:
        f"{RES}/logs/{{ds}}/pseudo/stuff_maps.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/stuff_maps.tsv"
    shell:
        "{U2SEG} cluster-stuff --manifest {input.manifest:q} --shard-size {params.shard_size:q}"
        " --features-dir {params.features_dir:q} --k {params.k:q} --sample-patches {params.sample_patches:q}"
        " --iterations {params.iterations:q} --seed {params.seed:q} --chunk-size {params.chunk_size:q}"
        " {params.crf} --crf-gaussian-sxy {params.crf_gsxy:q} --crf-gaussian-compat {params.crf_gcompat:q}"
        " --crf-bilateral-sxy {params.crf_bsxy:q} --crf-bilateral-srgb {params.crf_bsrgb:q}"
        " --crf-bilateral-compat {params.crf_bcompat:q} --crf-iterations {params.crf_iters:q}"
        " --crf-alpha {params.crf_alpha:q} --device {params.device:q} --threads {threads} {params.model}"
        " --out-model {output.model:q} --out-maps {output.maps:q} --summary {output.summary:q} > {log:q} 2>&1"


# The panoptic merge runs per shard (parallel jobs; memory and time of one shard), then one streaming
# concatenation writes the dataset's COCO panoptic json and hard-links the PNGs into the standard folders.
rule merge_panoptic_shard:
    """Merge one shard's instances and stuff into COCO panoptic pseudo-labels (+ semantic PNGs, gallery)."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        instances=f"{_PSEUDO}/instances_shards",
        stuff=f"{_PSEUDO}/stuff",
    output:
        json=f"{_PSEUDO}/panoptic_shards/shard_{{shard}}.json",
        folder=directory(f"{_PSEUDO}/panoptic_shards/shard_{{shard}}"),
    params:
        shard=lambda wc: int(wc.shard),
        shard_size=config["features"]["shard_size"],
        k=config["clustering"]["k"],
        num_stuff=config["stuff"]["k"],
        max_thing_overlap=config["panoptic"]["max_thing_overlap"],
        gallery_size=config["panoptic"]["gallery_size"],
        max_merge_pixels=config["panoptic"]["max_merge_pixels"],
    threads: 1
    resources:
        # + the manifest; per pixel of the shard's largest image (full-size PNGs) and of its merge grid
        mem_mb=declared_mem(
            MERGE_SHARD_BASE_MB,
            per_image_kb=MANIFEST_KB_PER_IMAGE,
            per_pixel_b=MERGE_B_PER_PIXEL,
            grid_pixel_b=MERGE_B_PER_GRID_PIXEL,
            grid_cap=config["panoptic"]["max_merge_pixels"],
            pixels_unknown=config["panoptic"]["max_merge_pixels"],
        ),
        runtime=declared_runtime(10, per_shard_image_s=0.5),
    log:
        f"{RES}/logs/{{ds}}/pseudo/merge_panoptic_{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/merge_panoptic_{{shard}}.tsv"
    shell:
        "{U2SEG} merge-panoptic-shard --manifest {input.manifest:q} --instances-dir {input.instances:q}"
        " --shard {params.shard} --shard-size {params.shard_size:q} --stuff-dir {input.stuff:q}"
        " --k {params.k:q} --num-stuff {params.num_stuff:q} --max-thing-overlap {params.max_thing_overlap:q}"
        " --gallery-size {params.gallery_size:q} --max-merge-pixels {params.max_merge_pixels:q}"
        " --out-json {output.json:q} --out-dir {output.folder:q}"
        " > {log:q} 2>&1"


rule concat_panoptic:
    """Concatenate the per-shard panoptic pseudo-labels into the dataset's COCO panoptic json + PNG folders."""
    input:
        jsons=per_shard(f"{_PSEUDO}/panoptic_shards/shard_{{shard}}.json"),
        folders=per_shard(f"{_PSEUDO}/panoptic_shards/shard_{{shard}}"),
        cluster_summary=f"{_PSEUDO}/cluster_summary.json",
        stuff_summary=f"{_PSEUDO}/stuff_summary.json",
    output:
        json=f"{_PSEUDO}/panoptic.json",
        panoptic=directory(f"{_PSEUDO}/panoptic"),
        semantic=directory(f"{_PSEUDO}/semantic"),
        gallery=directory(f"{_PSEUDO}/gallery"),
        summary=f"{_PSEUDO}/summary.json",
    params:
        shards_dir=lambda wc: f"{RES}/{wc.ds}/pseudo/panoptic_shards",
        num_shards=lambda wc: len(shard_ids(wc.ds)),
        k=config["clustering"]["k"],
        num_stuff=config["stuff"]["k"],
        max_thing_overlap=config["panoptic"]["max_thing_overlap"],
    threads: 1
    resources:
        # streamed: one shard json + 8 bytes per image (docs/benchmarks.md "Scale")
        mem_mb=declared_mem(CONCAT_BASE_MB, per_image_kb=CONCAT_KB_PER_IMAGE),
        runtime=declared_runtime(10, per_image_s=CONCAT_S_PER_IMAGE),
    log:
        f"{RES}/logs/{{ds}}/pseudo/concat_panoptic.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/concat_panoptic.tsv"
    shell:
        "{U2SEG} concat-panoptic --shards-dir {params.shards_dir:q} --num-shards {params.num_shards}"
        " --k {params.k:q} --num-stuff {params.num_stuff:q} --max-thing-overlap {params.max_thing_overlap:q}"
        " --cluster-summary {input.cluster_summary:q} --stuff-summary {input.stuff_summary:q}"
        " --out-json {output.json:q} --out-panoptic {output.panoptic:q} --out-semantic {output.semantic:q}"
        " --gallery {output.gallery:q} --summary {output.summary:q} > {log:q} 2>&1"


# Format check of the pseudo-labels, per shard (parallel jobs), then combined (fails the run on any
# inconsistency).
rule validate_pseudo_shard:
    """Format check of one shard's panoptic pseudo-labels (the run fails on any inconsistency)."""
    input:
        json=f"{_PSEUDO}/panoptic_shards/shard_{{shard}}.json",
        folder=f"{_PSEUDO}/panoptic_shards/shard_{{shard}}",
        instances=f"{_PSEUDO}/instances_shards",
    output:
        f"{_PSEUDO}/panoptic_shards/shard_{{shard}}.validation.json",
    params:
        k=config["clustering"]["k"],
    threads: 1
    resources:
        # per pixel of the shard's largest image (docs/benchmarks.md "Scale")
        mem_mb=declared_mem(
            VALIDATE_BASE_MB, per_pixel_b=VALIDATE_B_PER_PIXEL, pixels_unknown=config["panoptic"]["max_merge_pixels"]
        ),
        runtime=declared_runtime(10, per_shard_image_s=0.5),
    log:
        f"{RES}/logs/{{ds}}/pseudo/validate_{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/validate_{{shard}}.tsv"
    shell:
        "{U2SEG} validate-panoptic --panoptic-json {input.json:q} --panoptic-dir {input.folder:q}/panoptic"
        " --semantic-dir {input.folder:q}/semantic --instances {input.instances:q}/shard_{wildcards.shard}.json"
        " --num-things {params.k:q} --report {output:q} > {log:q} 2>&1"


rule validate_pseudo:
    """Combine the per-shard validation reports (the run fails on any inconsistency)."""
    input:
        reports=per_shard(f"{_PSEUDO}/panoptic_shards/shard_{{shard}}.validation.json"),
        json=f"{_PSEUDO}/panoptic.json",
    output:
        f"{_PSEUDO}/validation.json",
    params:
        reports_dir=lambda wc: f"{RES}/{wc.ds}/pseudo/panoptic_shards",
        num_shards=lambda wc: len(shard_ids(wc.ds)),
    threads: 1
    resources:
        mem_mb=declared_mem(200),
        runtime=declared_runtime(5, per_image_s=0.0001),
    log:
        f"{RES}/logs/{{ds}}/pseudo/validate.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/pseudo/validate.tsv"
    shell:
        "{U2SEG} concat-validation --reports-dir {params.reports_dir:q} --num-shards {params.num_shards}"
        " --report {output:q} > {log:q} 2>&1"


# Target: the pseudo-labels of the configured dataset (paths in docs/architecture.md).
rule pseudo_labels:
    """Target: the panoptic pseudo-labels of the configured dataset."""
    input:
        expand(
            [
                "{p}/instances.json",
                "{p}/centroids.npy",
                "{p}/panoptic.json",
                "{p}/panoptic",
                "{p}/semantic",
                "{p}/stuff",
                "{p}/gallery",
                "{p}/summary.json",
                "{p}/validation.json",
            ],
            p=f"{RES}/{DS}/pseudo",
        ),

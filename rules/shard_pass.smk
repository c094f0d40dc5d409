# The fused per-shard pass (config pipeline.fused: true): one job per shard from the images to the MaskCut
# masks, the instance embeddings and (stuff.model: stego_checkpoint) the STEGO stuff maps, with the backbone
# run once. It writes the very files of the separate rules (features_shard, maskcut, embed, stego_infer),
# so everything downstream is unchanged; each segment carries exactly the flags the separate rule passes.
# The zarr feature shard is an output only when something reads it later: features.keep_features, or the
# STEGO head trained on the stored features (stuff.model stego; temp() then, removed after the training).
# With stuff.model kmeans and features not kept the pass writes the shard's share of the seeded stuff sample
# instead; stuff_fit, stuff_maps_shard (features recomputed in memory) and stuff_gather (below) replace
# stuff_maps (docs/architecture.md "Fused per-shard pass").
# Otherwise the pass holds the shard's features in memory only and hands them to MaskCut, embed (and
# stego infer) as they are: no feature file is written (its mem_mb covers the shard).

from u2seg.pseudo.stuff.registry import STUFF_MODELS as _SP_STUFF

_SP_FEATURES = f"{RES}/{{ds}}/features/shard_{{shard}}.zarr"
_SP_KEEP = config["features"]["keep_features"]
_SP_CHECKPOINT = config["stuff"]["model"] == "stego_checkpoint"
# the k-means stuff model without stored features: the pass writes the shard's share of the seeded sample,
# `stuff_fit` fits on the shares, `stuff_maps_shard` recomputes each shard's features in memory for its maps
_SP_KMEANS_UNSTORED = config["pipeline"]["fused"] and not _SP_KEEP and config["stuff"]["model"] == "kmeans"
# a later step reads the feature shards (the k-means stuff fit with kept features, STEGO's kNN table and head
# training)
_SP_FEATURES_READ_LATER = not _SP_CHECKPOINT and not _SP_KMEANS_UNSTORED
_SP_ZARR_OUT = _SP_KEEP or _SP_FEATURES_READ_LATER


def shard_pass_mem(wildcards, attempt):
    """``mem_mb`` of one pass: the largest separate job's request (4,000 MB + manifest) + the shard's dense
    features held in memory (float16, once: each batch is written into one preallocated array) and, for
    stego_checkpoint, the checkpoint's ViT (1,000 MB); + MaskCut's CPU worker processes."""
    from u2seg.registry import BACKBONES

    spec = BACKBONES[config["backbone"]]
    grid = config["features"]["input_size"] // spec.patch_size
    shard_mb = config["features"]["shard_size"] * spec.feature_dim * grid * grid * 2 / 2**20
    n, _ = dataset_size(wildcards.ds)
    mb = 4000 + MASKCUT_WORKER_MB * _mc_workers + MANIFEST_KB_PER_IMAGE * n / 1024 + shard_mb
    mb += 1000 if _SP_CHECKPOINT else 0
    return with_retries(mb, attempt)


def shard_pass_segments(wildcards, output, threads):
    """The ':: stage flags' segments of one shard: the separate rules' flags (features_args, maskcut_args,
    embed_args, stego_infer_args: one builder per stage), the zarr path shared."""
    zarr = _SP_FEATURES.format(ds=wildcards.ds, shard=wildcards.shard)
    segments = [
        "features " + features_args(wildcards, zarr, threads),
        "maskcut " + maskcut_args(wildcards, zarr, output.json, output.gallery),
        "embed " + embed_args(wildcards, output.json, zarr, output.embed, threads),
    ]
    if _SP_CHECKPOINT:
        model = f"{RES}/{wildcards.ds}/pseudo/stego/model.npz"  # unused in checkpoint mode
        segments.append("stego infer " + stego_infer_args(wildcards, zarr, model, output.maps, threads))
    return " ".join(":: " + s for s in segments)


def _shard_pass_outputs():
    out = {
        "json": f"{RES}/{{ds}}/maskcut/shard_{{shard}}.json",
        "gallery": directory(f"{RES}/{{ds}}/maskcut/shard_{{shard}}_gallery"),
        "embed": f"{RES}/{{ds}}/pseudo/embed/shard_{{shard}}.npz",
    }
    if _SP_ZARR_OUT:
        out["features"] = directory(_SP_FEATURES) if _SP_KEEP else temp(directory(_SP_FEATURES))
    if _SP_CHECKPOINT:
        out["maps"] = directory(f"{RES}/{{ds}}/pseudo/stego/maps/shard_{{shard}}")
    if _SP_KMEANS_UNSTORED:
        out["sample"] = temp(f"{RES}/{{ds}}/pseudo/stuff_sample/shard_{{shard}}.npy")
    return out


def shard_pass_flags(output):
    """The pass's own flags: whether the zarr shard is kept, the k-means stuff sample's share."""
    flags = "--keep-features" if _SP_ZARR_OUT else "--no-keep-features"
    if _SP_KMEANS_UNSTORED:
        s = config["stuff"]
        flags += (
            f" --stuff-sample {shlex.quote(output.sample)} --sample-patches {int(s['sample_patches'])}"
            f" --sample-seed {int(s['seed'])}"
        )
    return flags


def stuff_fit_mem(wildcards, attempt):
    """``mem_mb`` of `stuff_fit`: 4,000 MB + the sample (stuff.sample_patches x C float16) twice."""
    from u2seg.registry import BACKBONES

    sample_mb = config["stuff"]["sample_patches"] * BACKBONES[config["backbone"]].feature_dim * 2 / 2**20
    return with_retries(4000 + 2 * sample_mb, attempt)


def stuff_crf_flags():
    """The CRF flags of the stuff stages (config stuff.crf), as rule stuff_maps passes them."""
    c = config["stuff"]["crf"]
    return ("--crf" if c["enabled"] else "") + (
        f" --crf-gaussian-sxy {c['gaussian_sxy']} --crf-gaussian-compat {c['gaussian_compat']}"
        f" --crf-bilateral-sxy {c['bilateral_sxy']} --crf-bilateral-srgb {c['bilateral_srgb']}"
        f" --crf-bilateral-compat {c['bilateral_compat']} --crf-iterations {c['iterations']}"
        f" --crf-alpha {c['alpha']}"
    )


if config["pipeline"]["fused"]:

    ruleorder: shard_pass > features_shard
    ruleorder: shard_pass > maskcut
    ruleorder: shard_pass > embed
    ruleorder: shard_pass > stego_infer

    rule shard_pass:
        """Fused per-shard pass: features once, MaskCut masks, instance embeddings (+ STEGO checkpoint maps)."""
        input:
            manifest=f"{RES}/{{ds}}/manifest.json",
        output:
            **_shard_pass_outputs(),
        params:
            keep=lambda wc, output: shard_pass_flags(output),
            segments=lambda wc, output, threads: shard_pass_segments(wc, output, threads),
        # the separate jobs' largest request: features (+ loader threads), maskcut (+ CPU workers)
        threads: max(2, 1 + config["features"]["loader_workers"], _mc_threads)
        resources:
            # runtime: the sum of the separate jobs' figures (features 0.5 + maskcut 3.2 + embed 1.0 s per shard
            # image, + stego_infer's 120 min); the pass saves their process starts (docs/benchmarks.md "Fused
            # per-shard pass")
            mem_mb=shard_pass_mem,
            runtime=declared_runtime(30 + (120 if _SP_CHECKPOINT else 0), per_shard_image_s=4.7),
            gpu=gpu_request(config["features"]["device"]),
        log:
            f"{RES}/logs/{{ds}}/shard_pass/shard_{{shard}}.log",
        benchmark:
            f"{RES}/benchmarks/{{ds}}/shard_pass/shard_{{shard}}.tsv"
        shell:
            "{U2SEG} shard-pass {params.keep} {params.segments} > {log:q} 2>&1"


if _SP_KMEANS_UNSTORED:

    ruleorder: stuff_fit > stuff_maps
    ruleorder: stuff_gather > stuff_maps

    rule stuff_fit:
        """k-means stuff model on the shards' shares of the seeded sample (= the sample of `stuff_maps`)."""
        input:
            manifest=f"{RES}/{{ds}}/manifest.json",
            samples=per_shard(f"{RES}/{{ds}}/pseudo/stuff_sample/shard_{{shard}}.npy"),
        output:
            model=f"{RES}/{{ds}}/pseudo/stuff_model.npz",
        params:
            sample_dir=lambda wc: f"{RES}/{wc.ds}/pseudo/stuff_sample",
            shard_size=config["features"]["shard_size"],
            k=config["stuff"]["k"],
            iterations=config["stuff"]["iterations"],
            seed=config["stuff"]["seed"],
            chunk_size=config["clustering"]["chunk_size"],
            device=config["features"]["device"],
        threads: 2
        resources:
            # 4,000 MB (stuff_maps' request) + the sample twice (the shards' parts + their concatenation)
            mem_mb=stuff_fit_mem,
            runtime=120,
        log:
            f"{RES}/logs/{{ds}}/pseudo/stuff_fit.log",
        benchmark:
            f"{RES}/benchmarks/{{ds}}/pseudo/stuff_fit.tsv"
        shell:
            "{U2SEG} cluster-stuff --model kmeans --manifest {input.manifest:q} --shard-size {params.shard_size:q}"
            " --sample-dir {params.sample_dir:q} --k {params.k:q} --iterations {params.iterations:q}"
            " --seed {params.seed:q} --chunk-size {params.chunk_size:q} --device {params.device:q}"
            " --threads {threads} --out-model {output.model:q} > {log:q} 2>&1"

    rule stuff_maps_shard:
        """One shard's k-means stuff maps: the backbone again (features in memory), the fitted model (+ CRF)."""
        input:
            manifest=f"{RES}/{{ds}}/manifest.json",
            model=f"{RES}/{{ds}}/pseudo/stuff_model.npz",
        output:
            temp(directory(f"{RES}/{{ds}}/pseudo/stuff_shards/shard_{{shard}}")),
        params:
            crf=stuff_crf_flags(),
            # the features segment's --out is never written: the features stay in memory
            features=lambda wc, threads: features_args(wc, _SP_FEATURES.format(ds=wc.ds, shard=wc.shard), threads),
        threads: max(2, 1 + config["features"]["loader_workers"])
        resources:
            # features_shard's request + the shard's dense features in memory; the features' runtime + the maps'
            mem_mb=shard_pass_mem,
            runtime=declared_runtime(30, per_shard_image_s=1.0),
            gpu=gpu_request(config["features"]["device"]),
        log:
            f"{RES}/logs/{{ds}}/pseudo/stuff_maps_{{shard}}.log",
        benchmark:
            f"{RES}/benchmarks/{{ds}}/pseudo/stuff_maps_{{shard}}.tsv"
        shell:
            "{U2SEG} stuff-shard --model {input.model:q} {params.crf} --out-maps {output:q}"
            " :: features {params.features} > {log:q} 2>&1"

    rule stuff_gather:
        """The per-shard k-means stuff maps into pseudo/stuff + stuff_summary.json (as `stuff_maps` writes them)."""
        input:
            manifest=f"{RES}/{{ds}}/manifest.json",
            model=f"{RES}/{{ds}}/pseudo/stuff_model.npz",
            shards=per_shard(f"{RES}/{{ds}}/pseudo/stuff_shards/shard_{{shard}}"),
        output:
            maps=directory(f"{RES}/{{ds}}/pseudo/stuff"),
            summary=f"{RES}/{{ds}}/pseudo/stuff_summary.json",
        params:
            maps_dir=lambda wc: f"{RES}/{wc.ds}/pseudo/stuff_shards",
            shard_size=config["features"]["shard_size"],
            k=config["stuff"]["k"],
        threads: 1
        resources:
            mem_mb=declared_mem(1000, per_image_kb=MANIFEST_KB_PER_IMAGE),
            runtime=declared_runtime(30, per_image_s=0.01),
        log:
            f"{RES}/logs/{{ds}}/pseudo/stuff_gather.log",
        benchmark:
            f"{RES}/benchmarks/{{ds}}/pseudo/stuff_gather.tsv"
        shell:
            "{U2SEG} cluster-stuff --model kmeans --manifest {input.manifest:q} --shard-size {params.shard_size:q}"
            " --k {params.k:q} --shard-maps-dir {params.maps_dir:q} --fitted-model {input.model:q}"
            " --out-maps {output.maps:q} --summary {output.summary:q} > {log:q} 2>&1"

# The fused per-shard pass (config pipeline.fused: true): one job per shard from the images to the MaskCut
# masks, the instance embeddings and (stuff.model: stego_checkpoint) the STEGO stuff maps, with the backbone
# run once. It writes the very files of the separate rules (features_shard, maskcut, embed, stego_infer),
# so everything downstream is unchanged; each segment carries exactly the flags the separate rule passes.
# The zarr feature shard is an output only when something reads it later: features.keep_features, or a
# stuff model fitted on the stored features (kmeans, stego; temp() then, removed after the fit).
# Otherwise the pass writes it to the job's scratch folder ($TMPDIR) and removes it: the peak feature disk
# is the shards in flight.

from u2seg.pseudo.stuff.registry import STUFF_MODELS as _SP_STUFF

_SP_FEATURES = f"{RES}/{{ds}}/features/shard_{{shard}}.zarr"
_SP_KEEP = config["features"]["keep_features"]
_SP_CHECKPOINT = config["stuff"]["model"] == "stego_checkpoint"
# a later step reads the feature shards (the k-means stuff fit, STEGO's kNN table and head training)
_SP_FEATURES_READ_LATER = not _SP_CHECKPOINT
_SP_ZARR_OUT = _SP_KEEP or _SP_FEATURES_READ_LATER


def shard_pass_mem(wildcards, attempt):
    """``mem_mb`` of one pass: the largest separate job's request (4,000 MB + manifest) + the shard's dense
    features held in memory (float16, twice: the batches and their concatenation) and, for
    stego_checkpoint, the checkpoint's ViT (1,000 MB); + MaskCut's CPU worker processes."""
    from u2seg.registry import BACKBONES

    spec = BACKBONES[config["backbone"]]
    grid = config["features"]["input_size"] // spec.patch_size
    shard_mb = config["features"]["shard_size"] * spec.feature_dim * grid * grid * 2 * 2 / 2**20
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
    return out


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
            keep="--keep-features" if _SP_ZARR_OUT else "--no-keep-features",
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

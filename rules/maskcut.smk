# MaskCut (docs/method.md §3): class-agnostic masks per feature shard, merged into one COCO json.

_mc = config["maskcut"]
_mc_crf = _mc["crf"]
# CPU workers of the maskcut job (config.yaml maskcut.cpu_workers): one core for the N-cut + one per worker
_mc_workers = _mc["cpu_workers"]
_mc_threads = 1 + _mc_workers if _mc_workers else 2
# peak RSS of one worker process, measured 218 MB with a 480 px CRF (docs/benchmarks.md): declared with margin
MASKCUT_WORKER_MB = 400


def maskcut_args(wildcards, features, out_json, out_gallery):
    """The flags of `u2seg maskcut` for one shard (the separate rule and the fused pass)."""
    q = lambda v: shlex.quote(str(v))
    return (
        f"--manifest {q(f'{RES}/{wildcards.ds}/manifest.json')} --features {q(features)}"
        f" --out {q(out_json)} --gallery {q(out_gallery)} --gallery-size {q(_mc['gallery_size'])}"
        f" --tau={q(_mc['tau'])} --eps={q(_mc['eps'])} --n-masks {q(_mc['n_masks'])}"
        f" --solver {q(_mc['solver'])} --eigen-tol={q(_mc['eigen_tol'])}"
        f" --foreground-rule {q(_mc['foreground_rule'])} --max-iou-previous={q(_mc['max_iou_previous'])}"
        f" --min-area-fraction={q(_mc['min_area_fraction'])} --min-crf-iou={q(_mc['min_crf_iou'])}"
        f" {'--crf' if _mc_crf['enabled'] else '--no-crf'}"
        f" --crf-gaussian-sxy={q(_mc_crf['gaussian_sxy'])} --crf-gaussian-compat={q(_mc_crf['gaussian_compat'])}"
        f" --crf-bilateral-sxy={q(_mc_crf['bilateral_sxy'])} --crf-bilateral-srgb={q(_mc_crf['bilateral_srgb'])}"
        f" --crf-bilateral-compat={q(_mc_crf['bilateral_compat'])} --crf-iterations {q(_mc_crf['iterations'])}"
        f" --batch-size {q(_mc['batch_size'])} --device {q(_mc['device'])} --seed {q(_mc['seed'])}"
        # torch threads of the main process: the job's threads minus the worker processes' cores
        f" --cpu-workers {_mc_workers} --threads {_mc_threads - _mc_workers}"
    )


rule maskcut:
    """MaskCut class-agnostic masks (COCO RLE) of one feature shard."""
    input:
        manifest=f"{RES}/{{ds}}/manifest.json",
        features=f"{RES}/{{ds}}/features/shard_{{shard}}.zarr",
    output:
        json=f"{RES}/{{ds}}/maskcut/shard_{{shard}}.json",
        gallery=directory(f"{RES}/{{ds}}/maskcut/shard_{{shard}}_gallery"),
    params:
        args=lambda wc, input, output: maskcut_args(wc, input.features, output.json, output.gallery),
    threads: _mc_threads
    resources:
        # measured figures (docs/benchmarks.md "Scale"): + the manifest it reads; 1.6 s per image (x2);
        # + each CPU worker process
        mem_mb=declared_mem(4000 + MASKCUT_WORKER_MB * _mc_workers, per_image_kb=MANIFEST_KB_PER_IMAGE),
        runtime=declared_runtime(10, per_shard_image_s=3.2),
        gpu=gpu_request(config["maskcut"]["device"]),
    log:
        f"{RES}/logs/{{ds}}/maskcut/shard_{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/maskcut/shard_{{shard}}.tsv"
    shell:
        "{U2SEG} maskcut {params.args} > {log:q} 2>&1"


rule merge_masks:
    """Merge the per-shard MaskCut masks into one COCO json + summary and gallery."""
    input:
        jsons=per_shard(f"{RES}/{{ds}}/maskcut/shard_{{shard}}.json"),
        galleries=per_shard(f"{RES}/{{ds}}/maskcut/shard_{{shard}}_gallery"),
    output:
        masks=f"{RES}/{{ds}}/maskcut/masks.json",
        summary=f"{RES}/{{ds}}/maskcut/summary.json",
        gallery=directory(f"{RES}/{{ds}}/maskcut/gallery"),
    params:
        # the shards are found in this folder (not listed on the command line: 80k shards at ImageNet)
        shards_dir=lambda wc: f"{RES}/{wc.ds}/maskcut",
        num_shards=lambda wc: len(shard_ids(wc.ds)),
    threads: 1
    resources:
        # streamed: one shard + 8 bytes per image (docs/benchmarks.md "Scale")
        mem_mb=declared_mem(MERGE_MASKS_BASE_MB, per_image_kb=MERGE_MASKS_KB_PER_IMAGE),
        runtime=declared_runtime(5, per_image_s=MERGE_MASKS_S_PER_IMAGE),
    log:
        f"{RES}/logs/{{ds}}/maskcut/merge.log",
    benchmark:
        f"{RES}/benchmarks/{{ds}}/maskcut/merge.tsv"
    shell:
        "{U2SEG} merge-masks --shards-dir {params.shards_dir:q} --num-shards {params.num_shards}"
        " --out {output.masks:q} --summary {output.summary:q} --gallery-out {output.gallery:q}"
        " > {log:q} 2>&1"


# Target: the merged MaskCut masks of the configured dataset.
rule maskcut_masks:
    """Target: the merged MaskCut masks of the configured dataset."""
    input:
        f"{RES}/{DS}/maskcut/masks.json",

#!/usr/bin/env bash
# GPU readiness check: one prepared script; its steps are capped at 240 + 60 + 60 + 90 + 150 + 120 s
# (12 minutes) on one GPU.
#   bash benchmarks/gpu_check.sh [FIGURES_FILE]        (default: gpu_check/figures.txt)
# Runs from the repository root with the project's environment (PYTHON, default: python; the u2seg
# package importable, e.g. PYTHONPATH=workflow). Steps, each under its own time limit:
#   1. the samples demo on CUDA with AMP (configs/gpu.yaml; target `predictions`: ingest, features,
#      MaskCut, pseudo-labels, 120 training iterations, predictions), wall time and per-rule seconds;
#   2. the CUDA eigensolver test (tests/maskcut/test_eigen.py::test_cuda_batched_solver_matches_dense);
#   3. a 1-GPU torchrun training smoke run (torch.distributed.run, 1 process) on the demo's
#      pseudo-labels, 20 iterations;
#   4. seconds per iteration of the configs/u2seg-coco.yaml model (R50-FPN, BN, K = 300) at 800 x 1216,
#      batch 2, AMP (benchmarks/train.py, random init, 5 warm-up + 20 timed iterations);
#   5. MaskCut on CUDA with the CPU half in the main process vs in 4 worker processes (benchmarks/overlap.py:
#      48 coco-mini val images, efficientnet_lite2 at 480 px, batch 16, --cpu-workers 0 vs 4), seconds
#      per image and whether both wrote the same masks json;
#   6. the fused per-shard pass (`u2seg shard-pass`, benchmarks/shard_pass.py --paper-shape: the u2seg-imagenet
#      preset's pass with a seeded random ViT-B/8 at 480 px, crop_cls embeddings, MaskCut with its CPU half in
#      nproc - 2 worker processes) on the 80 coco-mini val images in one shard: images/s, including the
#      process start; then benchmarks/cost_model.py with these figures (GPU-hours and disk of COCO train2017
#      and ImageNet-1K at the presets' settings; written to cost_model.md / .json beside FIGURES_FILE).
# Every figure is appended to FIGURES_FILE as `key: value` lines; a failed step records its exit code and
# the script goes on (exit status: number of failed steps). Copy the figures, with the GPU model and the
# date, into docs/benchmarks.md ("GPU").
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
FIG=${1:-gpu_check/figures.txt}
WORK=$(dirname "$FIG")/work
mkdir -p "$(dirname "$FIG")" "$WORK"
: > "$FIG"
export PYTHONPATH="$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}"
failed=0
fig() { echo "$1: $2" | tee -a "$FIG"; }
step() {  # step NAME LIMIT_S COMMAND... : run with a time limit, record seconds and exit code
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    fig "$name.seconds" "$(( $(date +%s) - t0 ))"
    fig "$name.exit_code" "$rc"
    if [ "$rc" -ne 0 ]; then failed=$((failed + 1)); tail -n 30 "$WORK/$name.log"; fi
    return $rc
}

fig date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fig gpu "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
fig torch "$($PY -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())')"
fig cpu_cores "$(nproc)"

# 1. the demo on CUDA with AMP (train.amp is on in config.yaml; gpu.yaml sets every device to cuda)
RES="$PWD/$WORK/demo"
step demo 240 $PY -m snakemake -s "$PWD/Snakefile" --cores "$(nproc)" --directory "$WORK" --configfile configs/gpu.yaml \
    predictions --config results="$RES"
for tsv in "$RES"/benchmarks/samples/*.tsv "$RES"/benchmarks/samples/*/*.tsv; do
    [ -f "$tsv" ] || continue
    fig "demo.rule.${tsv#"$RES"/benchmarks/samples/}" "$(awk 'NR == 2 {print $1 " s"}' "$tsv")"
done
[ -f "$RES/samples/train/r1/summary.json" ] && fig demo.train_summary "$(cat "$RES/samples/train/r1/summary.json" | tr -d '\n ')"

# 2. the CUDA eigensolver test (it skips without CUDA: a skip counts as a failure here)
step eigen_cuda 60 $PY -m pytest -q -rs "tests/maskcut/test_eigen.py::test_cuda_batched_solver_matches_dense"
grep -q "1 passed" "$WORK/eigen_cuda.log" || { fig eigen_cuda.passed no; failed=$((failed + 1)); }

# 3. 1-GPU torchrun smoke run (the launch the train rule uses for train.gpus > 1, with one process)
if [ -f "$RES/samples/pseudo/instances.json" ]; then
    step torchrun_1gpu 60 $PY -m torch.distributed.run --standalone --nnodes 1 --nproc-per-node 1 -m u2seg train \
        --instances "$RES/samples/pseudo/instances.json" --semantic-dir "$RES/samples/pseudo/semantic" \
        --manifest "$RES/samples/manifest.json" --out-dir "$WORK/torchrun" --max-iter 20 --steps 15 \
        --checkpoint-period 10 --device cuda --amp --no-progress
    [ -f "$WORK/torchrun/summary.json" ] && fig torchrun_1gpu.summary "$(tr -d '\n ' < "$WORK/torchrun/summary.json")"
else
    fig torchrun_1gpu.exit_code "skipped: the demo made no pseudo-labels"; failed=$((failed + 1))
fi

# 4. s/iteration of the u2seg-coco model at 800 x 1216, batch 2, AMP
step u2seg_coco_speed 90 $PY benchmarks/train.py --preset u2seg-coco --height 800 --width 1216 --batch-size 2 \
    --instances 20 --device cuda --warmup 5 --iters 20
fig u2seg_coco_speed.result "$(grep '^{' "$WORK/u2seg_coco_speed.log" | tail -n 1)"

# 5. MaskCut on one GPU: CPU half (CRF, RLE, image reading) in the main process vs overlapped in 4 workers
step maskcut_overlap 150 $PY benchmarks/overlap.py --device cuda --images 48 --batch-size 16 --workers 0 4 \
    --repeats 1 --threads 4 --work "$WORK/overlap"
fig maskcut_overlap.result "$(grep '"summary"' "$WORK/maskcut_overlap.log" | tail -n 1)"

# 6. the fused pass on one GPU with its CPU workers, then the cost model from the figures
step shard_pass 120 $PY benchmarks/shard_pass.py --coco-root ../shared/data/coco-mini --split val --images 80 \
    --shard-sizes 80 --paper-shape --device cuda --modes fused --threads 2 \
    --cpu-workers "$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))" --json "$WORK/shard_pass.json"
fig shard_pass.result "$(grep '^{' "$WORK/shard_pass.log" | tail -n 1)"
fig shard_pass.images_per_s "$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["fused_images_per_s"])' \
    "$WORK/shard_pass.json" 2>/dev/null)"
$PY benchmarks/cost_model.py --gpu-figures "$FIG" --json "$(dirname "$FIG")/cost_model.json" --markdown \
    | tee "$(dirname "$FIG")/cost_model.md"

fig failed_steps "$failed"
exit "$failed"

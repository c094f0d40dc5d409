"""CUPS's online momentum-teacher self-training (docs/selftrain.md), from a trained round-1 model.

Each step: the EMA teacher labels the batch's images (:func:`u2seg.detector.ema.pseudo_labels`, instance
confidence rising per round), the labels are augmented (copy-paste, photometric, crop, resolution jitter),
the student's heads take one AdamW step, then the teacher follows the student (EMA). Resumable: a checkpoint
holds student, teacher, optimizer and RNG states, and every random draw of a step is seeded by (seed, step),
so a resumed run ends with the same weights as an uninterrupted one. DDP under torchrun as ``train``.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from u2seg import fingerprint as fp
from u2seg.atomic import write_json, write_text
from u2seg.detector import checkpoint as ckpt
from u2seg.detector import cups_augment as aug
from u2seg.detector.data import (
    BatchConfig,
    IterationBatches,
    PseudoLabelDataset,
    Sample,
    copy_paste,
    output_size,
    resize_image,
    to_model_inputs,
)
from u2seg.detector.ema import (
    build_optimizer,
    ema_update,
    instance_threshold,
    predict_teacher,
    pseudo_labels,
    round_of,
)
from u2seg.detector.model import ModelConfig, build_model
from u2seg.detector.params import CupsSelfTrainParams
from u2seg.detector.train import init_distributed, load_init_weights, plot_losses, restart_metrics, restore_training
from u2seg.device import resolve_device
from u2seg.errors import UserError
from u2seg.manifest import image_path
from u2seg.progress import ProgressLog

log = logging.getLogger(__name__)

# settings that do not change the trained weights
_NOT_FINGERPRINTED = ("checkpoint_period", "keep_checkpoints", "device")


def input_fingerprint(dataset: PseudoLabelDataset, model_cfg: ModelConfig, p: CupsSelfTrainParams,
                      init: str | Path) -> dict[str, str]:
    """Digests of what the weights depend on: settings, image list, images and the initial weights."""
    settings = {k: v for k, v in asdict(p).items() if k not in _NOT_FINGERPRINTED}
    return {
        "settings": fp.settings_digest({"model": model_cfg.to_dict(), "cups": settings,
                                        "max_side": dataset.max_side}),
        "instances": fp.file_digest(dataset.instances_path),
        "images": fp.files_digest((f"{im['id']}:{im['file_name']}", image_path(dataset.manifest, im))
                                  for im in dataset.images),
        "init_weights": fp.file_digest(init),
    }


def teacher_input(dataset: PseudoLabelDataset, index: int, p: CupsSelfTrainParams) -> tuple[np.ndarray, int]:
    """Image ``index`` resized to the teacher's input size, and its image id."""
    sample = dataset.load(index)
    h, w = sample.image.shape[:2]
    return resize_image(sample.image, output_size(h, w, p.teacher_min_size, p.teacher_max_size)), sample.image_id


def make_batch(teacher: nn.Module, dataset: PseudoLabelDataset, batches: IterationBatches, step: int,
               p: CupsSelfTrainParams, num_classes: int, rank: int, device: torch.device
               ) -> tuple[list[Sample], dict[str, float]]:
    """This rank's training samples of ``step``: teacher pseudo-labels, then the augmentations."""
    world = batches.world
    slots = list(range(rank, p.batch_size, world))
    idx = batches.indices(step)
    raw = [teacher_input(dataset, idx[s], p) for s in slots]
    thr = instance_threshold(step, p)
    t0 = time.perf_counter()
    outs = predict_teacher(teacher, [torch.from_numpy(im).permute(2, 0, 1).float().to(device) for im, _ in raw], thr,
                           p.teacher_tta)
    t_teacher = time.perf_counter() - t0
    samples = []
    for (image, image_id), out in zip(raw, outs):
        semantic, masks, labels = pseudo_labels(out, num_classes, p, thr)
        samples.append(Sample(image, masks, labels, semantic, image_id))
    stats = {"teacher_time": round(t_teacher, 4), "instances": float(sum(len(s.labels) for s in samples)),
             "ignore": float(np.mean([(s.semantic == 255).mean() for s in samples])), "inst_thresh": thr}
    if p.copy_paste:
        rng = np.random.default_rng([p.seed, step, 1_000_003 + rank])
        samples = [copy_paste(t, s, rng, p.copy_paste_min_scale, p.copy_paste_max_scale)
                   for t, s in zip(samples, samples[::-1])]
    out_samples = []
    for slot, s in zip(slots, samples):
        rng = np.random.default_rng([p.seed, step, slot])
        if p.photometric:
            s = Sample(aug.photometric(s.image, rng), s.masks, s.labels, s.semantic, s.image_id)
        s = aug.random_crop(s, rng, p.crop_min_fraction)
        out_samples.append(aug.resolution_jitter(s, rng, p.jitter_min_sizes, p.jitter_max_size))
    return out_samples, stats


def _tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def self_train(dataset: PseudoLabelDataset, model_cfg: ModelConfig, p: CupsSelfTrainParams, out_dir: str | Path,
               init: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) all rounds into ``out_dir``: ``work/`` checkpoints, then ``model_final.pth`` (the
    student), ``teacher_final.pth``, ``metrics.jsonl``, ``loss.png`` and ``summary.json``."""
    p.validate()
    out = Path(out_dir)
    work = out / "work"
    rank, world, local_rank = init_distributed(p.device)
    if p.batch_size % world:
        raise UserError(f"batch size {p.batch_size} is not divisible by the {world} processes")
    device = resolve_device(p.device, local_rank)
    torch.manual_seed(p.seed)
    model = build_model(model_cfg, load_pretrained=False)
    load_init_weights(model, init)
    teacher = copy.deepcopy(model)
    teacher.set_test_params(score_thresh=p.teacher_score_thresh)
    model.to(device).train()
    teacher.to(device).eval().requires_grad_(False)
    optimizer = build_optimizer(model, p)
    trained = [q for q in model.parameters() if q.requires_grad]
    inputs = input_fingerprint(dataset, model_cfg, p, init) if rank == 0 else None
    if world > 1:
        import torch.distributed as dist

        shared = [inputs]
        dist.broadcast_object_list(shared, src=0)
        inputs = shared[0]
    total = p.total_steps
    start = restore_training(work, inputs, total, "self-training",
                             {"model": model, "teacher": teacher, "optimizer": optimizer})
    if world > 1:
        dist.barrier()
    if start == 0 and rank == 0:
        ckpt.clear_training(work)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None, find_unused_parameters=True)
    batches = IterationBatches(dataset, BatchConfig(batch_size=p.batch_size, seed=p.seed), rank=rank, world=world)
    metrics_path = work / "metrics.jsonl"
    rows = restart_metrics(metrics_path, start) if rank == 0 else []
    fh = open(metrics_path, "a") if rank == 0 else None
    prog = ProgressLog(log, "self-train step", total, "it", period=30.0, start=start)
    bar = tqdm(total=total, initial=start, desc="self-train", disable=not progress or rank != 0, mininterval=5.0)
    t_start = time.perf_counter()
    try:
        for step in range(start, total):
            torch.manual_seed(p.seed * 1_000_003 + step)
            t_step = time.perf_counter()
            samples, stats = make_batch(teacher, dataset, batches, step, p, model_cfg.num_classes, rank, device)
            images, targets = to_model_inputs(samples, device)
            model.train()
            losses = net(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise UserError(f"self-training diverged at step {step}: loss {float(loss)}; lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if p.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(trained, p.clip_grad)
            optimizer.step()
            ema_update(teacher, model, p.ema_decay)
            values = {k: float(v.detach()) for k, v in losses.items()}
            if world > 1:
                vals = torch.tensor(list(values.values()), device=device)
                dist.all_reduce(vals)
                values = {k: float(v) / world for k, v in zip(values, vals.cpu())}
            if rank == 0:
                row = {"iter": step + 1, "round": round_of(step, p), "loss": sum(values.values()), **values,
                       **stats, "time": round(time.perf_counter() - t_step, 4)}
                rows.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                bar.update(1)
                bar.set_postfix(round=row["round"], loss=f"{row['loss']:.3f}")
                prog.update(1, f"round {row['round']} loss {row['loss']:.4f} instances {stats['instances']:.0f} "
                               f"(teacher {stats['teacher_time']:.2f}s of {row['time']:.2f}s)")
                done = step + 1
                if done % p.checkpoint_period == 0 or done == total:
                    ckpt.save_training(work, done, {
                        "model": model.state_dict(), "teacher": teacher.state_dict(),
                        "optimizer": optimizer.state_dict(), "rng": ckpt.rng_state(),
                        "fingerprint": fp.combine(inputs), "inputs": inputs, "model_config": model_cfg.to_dict(),
                    }, keep=p.keep_checkpoints)
    finally:
        bar.close()
        if fh is not None:
            fh.close()
    elapsed = time.perf_counter() - t_start
    summary: dict[str, Any] = {}
    if rank == 0:
        summary = _finish(out, model, teacher, model_cfg, p, dataset, rows, start, elapsed, device, world, init,
                          inputs)
    if world > 1:
        dist.barrier()
    return summary


def _finish(out: Path, model: nn.Module, teacher: nn.Module, model_cfg: ModelConfig, p: CupsSelfTrainParams,
            dataset: PseudoLabelDataset, rows: list[dict[str, Any]], start: int, elapsed: float,
            device: torch.device, world: int, init: str | Path, inputs: dict[str, str]) -> dict[str, Any]:
    obj = ckpt.load_model_file(init)
    categories = obj.get("categories") or [{"id": k + 1, "name": f"cluster_{k}", "isthing": 1}
                                           for k in range(model_cfg.num_classes)]
    meta = {"iterations": p.total_steps, "selftrain": "cups", "cups_selftrain": asdict(p), "init": str(init),
            "num_images": len(dataset), "inputs": inputs}
    if "test_size" in (obj.get("meta") or {}):
        meta["test_size"] = obj["meta"]["test_size"]
    ckpt.save_model(out / "model_final.pth", model.state_dict(), model_cfg.to_dict(), categories, meta)
    ckpt.save_model(out / "teacher_final.pth", teacher.state_dict(), model_cfg.to_dict(), categories,
                    dict(meta, role="ema teacher"))
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if rows:
        plot_losses([dict(r, lr=p.lr) for r in rows], out / "loss.png")
    ran = p.total_steps - start
    n = max(1, min(10, len(rows) // 4))
    summary = {
        "steps": p.total_steps, "rounds": p.rounds, "resumed_at": start,
        "loss_start": float(np.mean([r["loss"] for r in rows[:n]])) if rows else None,
        "loss_end": float(np.mean([r["loss"] for r in rows[-n:]])) if rows else None,
        "seconds": round(elapsed, 1), "seconds_per_step": round(elapsed / ran, 3) if ran else None,
        "teacher_seconds_per_step": round(float(np.mean([r["teacher_time"] for r in rows])), 3) if rows else None,
        "teacher_mb": round(_tensor_bytes(teacher) / 2**20, 1),
        "instance_thresholds": [round(p.instance_threshold + r * p.confidence_step, 6) for r in range(p.rounds)],
        "device": str(device), "processes": world, "batch_size": p.batch_size, "num_images": len(dataset),
        "init": str(init), "inputs": inputs,
    }
    write_json(out / "summary.json", summary, indent=2)
    return summary

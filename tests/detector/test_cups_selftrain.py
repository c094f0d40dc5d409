"""CUPS's momentum-teacher self-training against CUPS's own code, and exact resume.

The reference values were recorded from visinf/cups by ``benchmarks/cups_selftrain_reference.py`` into
``tests/detector/data/cups_selftrain_reference.{npz,json}`` (tolerances: docs/selftrain.md).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from u2seg.detector import checkpoint as ckpt
from u2seg.detector import cups_augment as aug
from u2seg.detector.d2_keys import u2seg_to_d2
from u2seg.detector.data import PseudoLabelDataset, Sample
from u2seg.detector.ema import (
    TeacherOutput,
    build_optimizer,
    ema_update,
    head_parameter_names,
    instance_threshold,
    pseudo_labels,
    round_of,
)
from u2seg.detector.model import build_model
from u2seg.detector.params import CupsSelfTrainParams

from .synth import K, STUFF, make_dataset, tiny_model_config

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def ref():
    arrays = np.load(DATA / "cups_selftrain_reference.npz")
    meta = json.loads((DATA / "cups_selftrain_reference.json").read_text())
    return {k: arrays[k] for k in arrays.files}, meta


def _toy(arrays: dict, prefix: str) -> nn.Module:
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), FrozenBatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3))
    m.load_state_dict({k[len(prefix):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)})
    return m


def test_ema_update_equals_cups_after_n_steps(ref):
    arrays, meta = ref
    student, teacher = _toy(arrays, "ema/student0/"), _toy(arrays, "ema/teacher0/")
    buffers0 = {k: v.clone() for k, v in teacher.named_buffers()}
    for step in range(meta["ema"]["steps"]):
        with torch.no_grad():
            for n, p in student.named_parameters():
                p.add_(torch.from_numpy(arrays[f"ema/update{step}/{n}"]))
        ema_update(teacher, student, CupsSelfTrainParams().ema_decay)
    final = {k: v for k, v in teacher.state_dict().items()}
    n = meta["ema"]["steps"]
    for k, v in final.items():
        assert torch.equal(v, torch.from_numpy(arrays[f"ema/teacher{n}/{k}"])), k  # bit-equal
    for k, v in teacher.named_buffers():
        assert torch.equal(v, buffers0[k]), f"buffer {k} must not move"
    assert not torch.equal(final["0.weight"], torch.from_numpy(arrays["ema/teacher0/0.weight"]))


@pytest.fixture(scope="module")
def r50():
    return build_model(tiny_model_config(backbone="resnet50", backbone_weights=None, fpn_norm="frozen_bn"),
                       load_pretrained=False)


def _shared(ours: list[str], theirs: set[str]) -> dict[str, str]:
    """our name -> detectron2 name, for our tensors whose detectron2 name CUPS's model has."""
    out = {}
    for n in ours:
        d2 = u2seg_to_d2(n)
        if d2 is not None and d2 in theirs:
            out[n] = d2
    return out


def test_ema_moves_the_same_tensors_as_cups(ref, r50):
    _, meta = ref
    teacher = r50
    student = build_model(teacher.cfg, load_pretrained=False)
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for v in student.state_dict().values():
            if v.is_floating_point():
                v.add_(1.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.999)
    changed = {k for k, v in teacher.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {n for n, _ in teacher.named_parameters()}
    cups_changed = set(meta["ema_state"]["changed"])
    shared = _shared(list(before), cups_changed | set(meta["ema_state"]["unchanged"]))
    assert len(shared) == len(before) >= 300  # every tensor of the ResNet-50 build is in CUPS's model
    for ours, d2 in shared.items():
        assert (ours in changed) == (d2 in cups_changed), (ours, d2)
    teacher.load_state_dict(before)


def test_trained_parameters_and_optimizer_equal_cups(ref, r50):
    _, meta = ref
    opt_ref = meta["optimizer"]
    trained = set(head_parameter_names(r50))
    shared = _shared([n for n, _ in r50.named_parameters()], set(opt_ref["all_parameters"]))
    assert len(shared) == len(list(r50.named_parameters())) >= 100
    cups_trained = set(opt_ref["trained"])
    for ours, d2 in shared.items():
        assert (ours in trained) == (d2 in cups_trained), (ours, d2)
    assert any(n.startswith("sem_head.") for n in trained) and not any(".norm." in n for n in trained)
    assert not any(n.startswith(("backbone.", "fpn.")) for n in trained)
    p = CupsSelfTrainParams()
    opt = build_optimizer(r50, p)
    group = opt.param_groups[0]
    assert type(opt).__name__ == opt_ref["type"]
    assert (group["lr"], group["weight_decay"], list(group["betas"])) == \
        (opt_ref["lr"], opt_ref["weight_decay"], opt_ref["betas"])
    assert sum(q.numel() for q in group["params"]) == sum(q.numel() for n, q in r50.named_parameters() if n in trained)
    assert {n for n, q in r50.named_parameters() if q.requires_grad} == trained


@pytest.mark.parametrize("case", [0, 1])
def test_pseudo_labels_equal_cups(ref, case):
    arrays, meta = ref
    thr = meta["pseudo"]["cases"][case]["threshold"]
    out = TeacherOutput(torch.from_numpy(arrays["teacher/probs"]), torch.from_numpy(arrays["teacher/masks"]),
                        torch.from_numpy(arrays["teacher/scores"]), torch.from_numpy(arrays["teacher/classes"]))
    p = CupsSelfTrainParams(stuff_area_thresh=meta["pseudo"]["stuff_area"],
                            semantic_threshold=meta["pseudo"]["semantic_threshold"])
    semantic, masks, labels = pseudo_labels(out, meta["pseudo"]["num_classes"], p, thr)
    key = f"pseudo/{thr}"
    np.testing.assert_array_equal(semantic.astype(np.int64), arrays[f"{key}/semantic"])
    assert (semantic == 255).any() and len(np.unique(semantic)) >= 3  # the case exercises ignore and classes
    np.testing.assert_array_equal(masks, arrays[f"{key}/masks"])
    np.testing.assert_array_equal(labels, arrays[f"{key}/classes"])
    n_things = sum(s["isthing"] for s in meta["pseudo"]["cases"][case]["segments"])
    assert len(labels) == n_things >= 2
    # CUPS's boxes end at the last pixel (inclusive), this pipeline's one past it
    s = Sample(np.zeros((*semantic.shape, 3), np.uint8), masks, labels, semantic)
    np.testing.assert_array_equal(s.boxes - np.array([0, 0, 1, 1]), arrays[f"{key}/boxes"])


def test_rising_threshold_needs_the_higher_confidence(ref):
    arrays, meta = ref
    counts = [sum(s["isthing"] for s in c["segments"]) for c in meta["pseudo"]["cases"]]
    assert counts[0] > counts[1]  # 0.75 drops the 0.74 / 0.72 instances that 0.7 keeps


def test_defaults_and_schedule_equal_cups_config(ref):
    _, meta = ref
    s, p = meta["schedule"], CupsSelfTrainParams()
    assert (p.rounds, p.round_steps, p.total_steps) == (s["rounds"], s["round_steps"], s["max_steps"])
    assert p.confidence_step == s["confidence_step"] and p.semantic_threshold == s["semantic_threshold"]
    assert p.instance_threshold == s["teacher_instance_score_thresh"] == s["tta_confidence"]
    assert p.teacher_score_thresh == s["inference_confidence"]
    assert p.batch_size == s["batch_size"] and ["norm", p.clip_grad] == s["gradient_clip"]
    assert p.copy_paste == s["copy_paste"]
    assert p.jitter_min_sizes == [r[0] for r in s["resolutions"]]
    assert p.jitter_max_size == max(r[1] for r in s["resolutions"])
    # CUPS's released code never advances its round counter: its teacher keeps the round-1 confidence.
    assert s["round_counter"] == 1
    flat = CupsSelfTrainParams(confidence_step=0.0)
    assert {instance_threshold(t, flat) for t in range(flat.total_steps)} == {s["teacher_instance_score_thresh"]}
    # the documented schedule (base + (round - 1) x step), this pipeline's default
    got = [(round_of(t, p), instance_threshold(t, p)) for t in (0, 499, 500, 999, 1000, 1499)]
    assert got == [(1, 0.7), (1, 0.7), (2, pytest.approx(0.75)), (2, pytest.approx(0.75)), (3, pytest.approx(0.8)),
                   (3, pytest.approx(0.8))]


def test_crop_and_jitter_keep_targets_aligned():
    rng = np.random.default_rng(0)
    h, w = 60, 90
    masks = np.zeros((2, h, w), bool)
    masks[0, 10:30, 10:40] = True
    masks[1, 0:2, 0:2] = True  # 4 pixels: dropped when cropped to <= 4, as CUPS
    sem = np.zeros((h, w), np.uint8)
    s = Sample(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), masks, np.array([1, 2]), sem)
    c = aug.random_crop(s, np.random.default_rng(1), 0.5)
    assert c.image.shape[:2] == c.semantic.shape == c.masks.shape[1:]
    assert 2 not in c.labels.tolist()
    j = aug.resolution_jitter(c, np.random.default_rng(2), [32, 40], 200)
    assert min(j.image.shape[:2]) in (32, 40) and j.semantic.shape == j.image.shape[:2]
    empty = Sample(s.image, np.zeros((0, h, w), bool), np.zeros(0, np.int64), sem)  # a teacher without instances
    e = aug.random_crop(empty, np.random.default_rng(1), 0.5)
    assert e.masks.shape[0] == 0 and e.masks.shape[1:] == e.image.shape[:2]
    ph = aug.photometric(s.image, np.random.default_rng(3))
    assert ph.shape == s.image.shape and ph.dtype == np.uint8 and not np.array_equal(ph, s.image)


def _params(**kw) -> CupsSelfTrainParams:
    base = dict(device="cpu", rounds=2, round_steps=2, batch_size=2, instance_threshold=0.0, confidence_step=0.05,
                teacher_score_thresh=0.0, stuff_area_thresh=0, teacher_min_size=64, teacher_max_size=96,
                jitter_min_sizes=[48, 64], jitter_max_size=96, checkpoint_period=2)
    base.update(kw)
    return CupsSelfTrainParams(**base)


@pytest.mark.slow  # a round-1 model, then self-training straight and killed + resumed (~40 s)
def test_resume_after_kill_gives_the_same_weights(tmp_path, monkeypatch):
    from u2seg.detector import ema_selftrain
    from u2seg.detector.train import TrainConfig, train

    files = make_dataset(tmp_path / "data", n_images=3)
    ds = PseudoLabelDataset(files["instances"], files["manifest"], files["semantic"], K, STUFF)
    mcfg = tiny_model_config()
    train(ds, mcfg, TrainConfig(seed=1, device="cpu", batch_size=2, min_sizes=[64], max_size=96, max_iter=3,
                                warmup_iters=1, steps=[]), tmp_path / "r1", progress=False)
    init = tmp_path / "r1" / "model_final.pth"
    straight = ema_selftrain.self_train(ds, mcfg, _params(), tmp_path / "straight", init, progress=False)
    assert straight["resumed_at"] == 0 and straight["instance_thresholds"] == [0.0, 0.05]

    real = ema_selftrain.make_batch

    def killed(teacher, dataset, batches, step, *args, **kw):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real(teacher, dataset, batches, step, *args, **kw)

    monkeypatch.setattr(ema_selftrain, "make_batch", killed)
    with pytest.raises(KeyboardInterrupt):
        ema_selftrain.self_train(ds, mcfg, _params(), tmp_path / "resumed", init, progress=False)
    monkeypatch.setattr(ema_selftrain, "make_batch", real)
    state = ckpt.load(ckpt.latest_training(tmp_path / "resumed" / "work"))
    assert state["iteration"] == 2 and "teacher" in state
    resumed = ema_selftrain.self_train(ds, mcfg, _params(), tmp_path / "resumed", init, progress=False)
    assert resumed["resumed_at"] == 2
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [1, 2, 3, 4] and [r["round"] for r in rows] == [1, 1, 2, 2]
    assert all(r["instances"] > 0 for r in rows)
    for name in ("model_final.pth", "teacher_final.pth"):
        a = ckpt.load_model_file(tmp_path / "straight" / name)["model"]
        b = ckpt.load_model_file(tmp_path / "resumed" / name)["model"]
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    # the student trained its heads only; the teacher followed it
    s0 = ckpt.load_model_file(init)["model"]
    s1 = ckpt.load_model_file(tmp_path / "straight" / "model_final.pth")["model"]
    t1 = ckpt.load_model_file(tmp_path / "straight" / "teacher_final.pth")["model"]
    head = "roi_heads.box_predictors.0.cls_score.weight"
    assert head in s0 and not torch.equal(s0[head], s1[head]) and not torch.equal(s0[head], t1[head])
    assert all(torch.equal(s0[k], s1[k]) for k in s0 if k.startswith("backbone."))


@pytest.mark.snakemake
def test_cups_method_dag_and_command(tmp_path):
    """selftrain.method cups: round 1, then `self-train-ema` from it; `predictions` predicts with its student."""
    from tests.snakemake_runner import run_snakemake

    from .synth import stage_ingested

    stage_ingested(tmp_path)
    cfg = tmp_path / "cups.yaml"
    cfg.write_text("selftrain:\n  method: cups\n  cups:\n    round_steps: 7\n    confidence_step: 0.0\n")
    out = run_snakemake(tmp_path, ["predictions"], {"results": str(tmp_path / "results")}, extra=["-n", "-p"],
                        configfiles=[cfg]).stdout
    cmds = [line for line in out.splitlines() if " -m u2seg self-train-ema " in line]
    assert len(cmds) == 1, out[-3000:]
    cmd = cmds[0]
    assert "--init" in cmd and "train/r1/model_final.pth" in cmd and "train/cups" in cmd
    assert "--round-steps 7" in cmd and "--confidence-step 0.0" in cmd and "--instance-threshold 0.7" in cmd
    assert "--betas 0.9 0.999" in cmd and "--threads 2" in cmd and "--no-progress" in cmd
    assert len([x for x in out.splitlines() if re.search(r" -m u2seg train ", x)]) == 1
    predicts = [x for x in out.splitlines() if " -m u2seg predict " in x]
    assert len(predicts) == 1 and "train/cups/model_final.pth" in predicts[0] and "predict/samples-cups" in predicts[0]
    # the report shows r1 and the CUPS run (not the rounds of train.rounds) and the CUPS student's predictions
    cfg.write_text(cfg.read_text() + "train:\n  rounds: 2\n")
    out = run_snakemake(tmp_path, ["inspect"], {"results": str(tmp_path / "results")}, extra=["-n", "-p"],
                        configfiles=[cfg]).stdout
    titles = re.findall(r"report train --title 'Training (\S+): samples'", out)
    assert sorted(titles) == ["cups", "r1"], out[-3000:]
    assert "train/cups/loss.png" in out and "train/r2/" not in out
    assert re.search(r"report predictions --title 'Predictions of samples-cups on samples'", out)


def test_cli_parses_every_config_key():
    """Every key of config.yaml's selftrain.cups (but threads) is a `self-train-ema` flag and parses back."""
    import argparse
    import shlex

    import yaml

    from u2seg.detector import ema_selftrain_cli
    from u2seg.params import to_flags

    cfg = yaml.safe_load((Path(__file__).parents[2] / "config.yaml").read_text())["selftrain"]["cups"]
    values = {k: v for k, v in cfg.items() if k != "threads"}
    parser = argparse.ArgumentParser()
    ema_selftrain_cli.add_arguments(parser)
    args = parser.parse_args(["--init", "i.pth", "--instances", "i.json", "--manifest", "m.json", "--out-dir", "o"]
                             + shlex.split(to_flags(values)))
    for key, value in values.items():
        assert getattr(args, key) == value, key
    assert len(values) == len(__import__("dataclasses").fields(CupsSelfTrainParams))


def _two_image_start(tmp_path: Path) -> tuple[PseudoLabelDataset, Any, Path]:
    """A 2-image pseudo-labelled dataset, the tiny model config and seeded initial weights saved as init.pth."""
    files = make_dataset(tmp_path / "data", n_images=2)
    ds = PseudoLabelDataset(files["instances"], files["manifest"], None, K, STUFF)
    mcfg = tiny_model_config()
    torch.manual_seed(0)
    init = tmp_path / "init.pth"
    ckpt.save_model(init, build_model(mcfg, load_pretrained=False).state_dict(), mcfg.to_dict(), [])
    return ds, mcfg, init


def test_a_teacher_without_confident_instances_still_trains(tmp_path):
    """Confidence 1.0: no pseudo-instance passes; the step trains on the semantic labels alone."""
    from u2seg.detector import ema_selftrain

    ds, mcfg, init = _two_image_start(tmp_path)
    s = ema_selftrain.self_train(ds, mcfg, _params(rounds=1, round_steps=1, instance_threshold=1.0,
                                                   confidence_step=0.0, checkpoint_period=1),
                                 tmp_path / "out", init, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert s["steps"] == 1 and rows[0]["instances"] == 0 and np.isfinite(rows[0]["loss"])
    assert rows[0]["loss_sem_seg"] > 0


@pytest.mark.snakemake
def test_preset_over_u2seg_coco_runs_cups_on_eight_gpus(tmp_path):
    """configs/u2seg-coco.yaml + configs/cups-selftrain.yaml: round 1, then CUPS's schedule under torchrun."""
    from tests.conftest import COCO_MINI, REPO, require_shared
    from tests.recipes.test_presets import _job, _write_ingested
    from tests.snakemake_runner import run_snakemake

    require_shared(COCO_MINI)
    results = tmp_path / "results"
    _write_ingested(results, "train")
    out = run_snakemake(tmp_path, ["train", "-n", "-p"], {"coco_root": str(COCO_MINI), "results": str(results)},
                        configfiles=[REPO / "configs" / "u2seg-coco.yaml", REPO / "configs" / "cups-selftrain.yaml"],
                        extra=["--resources", "gpu=8"], cores=16, timeout=600).stdout
    (job,) = _job(out, "self_train_cups")
    assert "-m torch.distributed.run --nproc-per-node 8 --standalone --nnodes 1 -m u2seg self-train-ema" in job
    for flag in ("--rounds 3", "--round-steps 500", "--batch-size 16", "--lr 1e-05", "--ema-decay 0.999",
                 "--instance-threshold 0.7", "--confidence-step 0.05", "--device cuda", "--threads 4",
                 "train/r1/model_final.pth"):
        assert flag in job, flag
    assert re.search(r"resources: .*\bgpu=8\b", job), job
    assert len(_job(out, "train_round")) == 1


@pytest.mark.parametrize("teacher_tta", [True, False])
def test_the_teacher_predicts_with_tta_when_asked(tmp_path, monkeypatch, teacher_tta):
    """teacher_tta (CUPS's teacher): every teacher call goes through tta_predict at the round's confidence."""
    from u2seg.detector import ema_selftrain, tta

    calls: list[float] = []
    real = tta.tta_predict

    def spy(model, images, params):
        calls.append(params.score_thresh)
        return real(model, images, params)

    monkeypatch.setattr(tta, "tta_predict", spy)
    ds, mcfg, init = _two_image_start(tmp_path)
    ema_selftrain.self_train(ds, mcfg, _params(rounds=2, round_steps=1, instance_threshold=0.6, confidence_step=0.1,
                                               teacher_tta=teacher_tta), tmp_path / "out", init, progress=False)
    assert calls == ([0.6, pytest.approx(0.7)] if teacher_tta else [])

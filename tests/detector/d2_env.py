"""Real detectron2 for the parity tests: built from ``../shared/vendor/detectron2-*.tar.gz``, cached as a
wheel outside the repository (``~/.cache/u2seg/wheels/<tarball>-<python>-torch<version>/``) and
installed into the running interpreter's environment. Skips, with the reason, where ``../shared`` is
absent; a failing build is a test error, not a skip.

Also: U2Seg's detectron2 config (``u2seg_R50_300.yaml`` on detectron2's ``Base-Panoptic-FPN.yaml``,
with a small K) and seeded random weights that make every head's output non-trivial.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
VENDOR = REPO.parent / "shared" / "vendor"
WHEEL_CACHE = Path.home() / ".cache" / "u2seg" / "wheels"
RUNTIME_DEPS = ("fvcore", "iopath", "omegaconf", "hydra", "yacs", "tabulate", "termcolor", "cloudpickle")


def _has_detectron2() -> bool:
    try:
        importlib.import_module("detectron2._C")
        return True
    except ImportError:
        return False


def _build_wheel(tarball: Path, out_dir: Path) -> Path:
    """``pip wheel --no-build-isolation --no-deps`` of the unpacked tarball (CPU build) into ``out_dir``."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    env["FORCE_CUDA"] = "0"
    with tempfile.TemporaryDirectory(prefix="u2seg-d2-build-") as tmp:
        with tarfile.open(tarball) as tf:
            tf.extractall(tmp, filter="data")
        sources = [p for p in Path(tmp).iterdir() if (p / "setup.py").is_file()]
        if len(sources) != 1:
            raise RuntimeError(f"{tarball}: expected one source folder with setup.py, found {sources}")
        staging = Path(tmp) / "wheel"
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                               "--no-index", "-w", str(staging), str(sources[0])],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"building detectron2 from {tarball} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        built = sorted(staging.glob("detectron2-*.whl"))
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / built[0].name
        shutil.move(str(built[0]), str(final.with_suffix(".part")))
        os.replace(final.with_suffix(".part"), final)  # a complete wheel or none
    return final


def ensure_detectron2() -> None:
    """Install detectron2 (built from the vendored source, wheel cached) or skip with the reason."""
    if _has_detectron2():
        return
    tarballs = sorted(VENDOR.glob("detectron2-*.tar.gz"))
    if not tarballs:
        pytest.skip(f"detectron2 source not available: no {VENDOR}/detectron2-*.tar.gz (../shared beside the repo)")
    missing = [m for m in RUNTIME_DEPS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"detectron2's runtime dependencies are not installed: {missing} "
                    "(pip install -c constraints.txt -e '.[test]')")
    tarball = tarballs[-1]
    tag = f"{tarball.name[: -len('.tar.gz')]}-py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}"
    cache = WHEEL_CACHE / tag
    wheels = sorted(cache.glob("detectron2-*.whl"))
    wheel = wheels[-1] if wheels else None
    if wheel is None:
        print(f"\nbuilding detectron2 from {tarball} (first run only; cached in {cache}) ...", flush=True)
        wheel = _build_wheel(tarball, cache)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"installing {wheel} failed:\n{proc.stderr[-3000:]}")
    importlib.invalidate_caches()
    if not _has_detectron2():
        raise RuntimeError(f"detectron2 installed from {wheel} but `from detectron2 import _C` fails")


@pytest.fixture(scope="session")
def detectron2():
    """The detectron2 package (built and installed on first use)."""
    ensure_detectron2()
    import detectron2 as d2

    return d2


# ------------------------------------------------------------------------------------ U2Seg config
def u2seg_d2_cfg(num_classes: int, min_size: int = 800, max_size: int = 1333):
    """detectron2 CfgNode of U2Seg's ``u2seg_R50_300.yaml`` (its overrides of detectron2's
    ``Base-Panoptic-FPN.yaml``) with ``num_classes`` clusters, on CPU, test size ``min_size``."""
    import detectron2
    from detectron2.config import get_cfg

    # (model_zoo.get_config_file needs pkg_resources, which setuptools >= 81 no longer has)
    base = Path(detectron2.__file__).parent / "model_zoo" / "configs" / "COCO-PanopticSegmentation"
    cfg = get_cfg()
    cfg.merge_from_file(str(base / "Base-Panoptic-FPN.yaml"))
    cfg.merge_from_list([
        "MODEL.PIXEL_MEAN", [123.675, 116.280, 103.530], "MODEL.PIXEL_STD", [58.395, 57.120, 57.375],
        "MODEL.RESNETS.DEPTH", 50, "MODEL.RESNETS.NORM", "SyncBN", "MODEL.RESNETS.STRIDE_IN_1X1", False,
        "MODEL.BACKBONE.FREEZE_AT", 0, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 28,
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 4000,
        "MODEL.RPN.NMS_THRESH", 0.65, "MODEL.FPN.NORM", "SyncBN", "MODEL.ROI_HEADS.NAME", "CascadeROIHeads",
        "MODEL.ROI_HEADS.NUM_CLASSES", num_classes, "INPUT.MASK_FORMAT", "bitmask", "INPUT.FORMAT", "RGB",
        "TEST.DETECTIONS_PER_IMAGE", 100, "INPUT.MIN_SIZE_TEST", min_size, "INPUT.MAX_SIZE_TEST", max_size,
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    ])
    return cfg


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Seeded random weights with spread outputs: He-normal weights, small random biases, and random
    BN affine/running statistics (so a mapping mistake in any norm buffer shows); the class, box and
    mask predictors give logits of order 1 (not detectron2's near-constant initial outputs), the box
    regressors deltas of order 0.1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif ".norm." in name and name.endswith("weight"):
                t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.5)
            elif t.dim() >= 2:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            if "bbox_pred" in name or "anchor_deltas" in name:
                t.mul_(0.05)  # box deltas of order 0.1: boxes stay boxes (no collapse to zero height)

"""`u2seg segment`, the Python API and `u2seg predict` give the same outputs; odd images; clear errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import u2seg
from tests.segment.conftest import SETTINGS
from u2seg.cli import main as cli_main
from u2seg.errors import UserError
from u2seg.segment.cli import segment


def _read(folder):
    return {"results": json.loads((folder / "instances_results.json").read_text()),
            "panoptic": json.loads((folder / "panoptic.json").read_text())}


def test_segment_equals_predict_and_the_api(tiny, tmp_path):
    assert cli_main(["predict", "--weights", str(tiny["model"]), "--manifest", str(tiny["manifest"]),
                     "--out-dir", str(tmp_path / "pred"), *SETTINGS]) == 0
    assert cli_main(["segment", str(tiny["images"]), "--model", str(tiny["model"]),
                     "--out-dir", str(tmp_path / "seg"), *SETTINGS]) == 0
    pred, seg = _read(tmp_path / "pred"), _read(tmp_path / "seg")
    assert pred["results"] and seg["results"] == pred["results"]
    assert seg["panoptic"]["annotations"] == pred["panoptic"]["annotations"]
    assert seg["panoptic"]["categories"] == pred["panoptic"]["categories"]
    names = sorted(p.name for p in (tmp_path / "pred" / "panoptic").iterdir())
    assert names == ["img_00.png", "img_01.png"]
    for sub in ("panoptic", "semantic"):
        for name in names:
            a = np.asarray(Image.open(tmp_path / "pred" / sub / name))
            b = np.asarray(Image.open(tmp_path / "seg" / sub / name))
            assert np.array_equal(a, b), (sub, name)
    overlay = np.asarray(Image.open(tmp_path / "seg" / "overlays" / "img_00.png"))
    assert overlay.ndim == 3 and overlay.shape[1] > 3 * overlay.shape[0] // 2  # panels side by side
    assert json.loads((tmp_path / "seg" / "config.json").read_text())["stage"] == "segment"

    model = u2seg.load_model(tiny["model"], device="cpu", min_size=64, max_size=128, score_thresh=0.0,
                             instance_score_thresh=0.0, stuff_area_thresh=10)
    files = [tiny["images"] / n for n in names]
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    for image_id, (path_result, array_result) in enumerate(zip(model(files), model(arrays)), start=1):
        want = [r for r in pred["results"] if r["image_id"] == image_id]
        assert [dict(r, image_id=image_id) for r in path_result.results] == want
        assert array_result.results == path_result.results
        inst = path_result.instances
        assert len(inst) == len(want) and inst.masks.shape == (len(want), 64, 96)
        assert inst.category_ids.tolist() == [r["category_id"] for r in want]
        assert set(inst.names) <= {"thing0", "thing1", "thing2"}
        ann = pred["panoptic"]["annotations"][image_id - 1]
        assert path_result.segments == ann["segments_info"]
        png = np.asarray(Image.open(tmp_path / "pred" / "semantic" / ann["file_name"]))
        assert np.array_equal(path_result.semantic, png)
        assert set(np.unique(path_result.panoptic)) == {0} | {s["id"] for s in ann["segments_info"]} or \
            set(np.unique(path_result.panoptic)) == {s["id"] for s in ann["segments_info"]}
    drawn = model(files[0]).draw()
    assert drawn.dtype == np.uint8 and drawn.shape[2] == 3


def test_odd_images_are_read_as_ingest_reads_them(tiny, tmp_path):
    src = np.asarray(Image.open(tiny["images"] / "img_00.png").convert("RGB"))  # 64 x 96
    folder = tmp_path / "odd"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(src).convert("L").save(folder / "gray.png")
    Image.fromarray(src).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((src[..., 0].astype(np.uint16) * 257)).save(folder / "sub" / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the image is 96 high, 64 wide once oriented
    Image.fromarray(src).save(folder / "rotated.jpg", exif=exif)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    summary = segment([str(folder)], str(tiny["model"]), out, device="cpu", progress=False,
                      min_size=64, max_size=128, score_thresh=0.0)
    assert summary["images"] == 4 and summary["skipped"] == 2
    skipped = json.loads((out / "skipped.json").read_text())
    assert sorted(s["file_name"] for s in skipped["skipped"]) == ["broken.jpg", "empty.png"]
    sizes = {im["file_name"]: (im["height"], im["width"]) for im in json.loads((out / "panoptic.json").read_text())["images"]}
    assert sizes == {"cmyk.jpg": (64, 96), "gray.png": (64, 96), "rotated.jpg": (96, 64), "sub/deep16.png": (64, 96)}
    assert np.asarray(Image.open(out / "panoptic" / "rotated.png")).shape == (96, 64, 3)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["cmyk.png", "gray.png", "rotated.png", "sub__deep16.png"]
    model = u2seg.load_model(tiny["model"], device="cpu", min_size=64, max_size=128)
    assert model(np.zeros((30, 40), dtype=np.uint16)).panoptic.shape == (30, 40)  # 16-bit gray array
    assert model(Image.open(folder / "rotated.jpg")).panoptic.shape == (96, 64)  # PIL: EXIF applied


def test_globs_and_clear_errors(tiny, tmp_path):
    out = tmp_path / "out"
    summary = segment([str(tiny["images"] / "*_01.png")], str(tiny["model"]), out, device="cpu", progress=False,
                      min_size=64, max_size=128)
    assert summary["images"] == 1
    with pytest.raises(UserError, match="no such file or folder"):
        segment([str(tmp_path / "nothing*.jpg")], str(tiny["model"]), out, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        segment([str(tmp_path / "empty")], str(tiny["model"]), out, device="cpu")
    with pytest.raises(UserError, match="not a file and not a model name"):
        u2seg.load_model(tmp_path / "missing.pth")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="detectron2"):
        u2seg.load_model(tmp_path / "other.pth")
    with pytest.raises(UserError, match="path, a PIL image or a numpy array"):
        u2seg.load_model(tiny["model"], device="cpu")(3)
    assert cli_main(["segment", str(tmp_path / "empty"), "--model", str(tiny["model"]),
                     "--out-dir", str(out)]) != 0


def test_import_u2seg_stays_light():
    code = "import sys, u2seg; assert callable(u2seg.load_model); print('torch' in sys.modules)"
    # attribute access imports the API module, which itself imports no torch
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_wide_and_too_large_images(tiny, tmp_path):
    """A very wide image is segmented at its size with a bounded overlay; one over --max-side is skipped."""
    folder = tmp_path / "wide"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 3000, 3), dtype=np.uint8)).save(folder / "strip.png")
    Image.fromarray(rng.integers(0, 255, (40, 4000, 3), dtype=np.uint8)).save(folder / "toolong.png")
    out = tmp_path / "out"
    summary = segment([str(folder)], str(tiny["model"]), out, device="cpu", progress=False, max_side=3500,
                      min_size=32, max_size=2000)
    assert summary["images"] == 1 and summary["skipped"] == 1
    reason = json.loads((out / "skipped.json").read_text())["skipped"][0]
    assert reason["file_name"] == "toolong.png" and "max_side=3500" in reason["reason"]
    assert np.asarray(Image.open(out / "panoptic" / "strip.png")).shape == (40, 3000, 3)
    overlay = np.asarray(Image.open(out / "overlays" / "strip.png"))
    assert max(overlay.shape[:2]) <= 2048


def test_class_agnostic_model_without_semantic_head(tiny, tmp_path):
    """A CutLER-like model (one class, no stuff): no semantic map, things-only panoptic, a 3-panel overlay."""
    from tests.segment.conftest import save_tiny_model

    path = save_tiny_model(tmp_path / "agnostic.pth", num_classes=1, num_stuff=0)
    model = u2seg.load_model(path, device="cpu", min_size=64, max_size=128, score_thresh=0.0,
                             instance_score_thresh=0.0)
    result = model(tiny["images"] / "img_00.png")
    assert result.semantic is None and len(result.instances) > 0
    assert set(result.instances.category_ids.tolist()) == {1} and {s["isthing"] for s in result.segments} == {1}
    with_sem = u2seg.load_model(tiny["model"], device="cpu", min_size=64, max_size=128, score_thresh=0.0,
                                instance_score_thresh=0.0)(tiny["images"] / "img_00.png")
    assert result.draw().shape[1] < with_sem.draw().shape[1]  # one panel fewer

"""``stego_checkpoint`` inference as STEGO's evaluation (flip averaging, resize + centre crop, CRF) against
label maps recorded from STEGO's own code (tests/pseudo/data/README.md) on seeded weights and images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.pseudo.conftest import SHARD_SIZE, SIZES, Synthetic
from tests.pseudo.stego_seeded import FIXTURE_IMAGES, seeded_image, seeded_state_dict, write_seeded_checkpoint
from u2seg.cli import main
from u2seg.crf import STEGO_CRF
from u2seg.pseudo.stuff.stego.checkpoint import CheckpointTokens, stego_model_from_checkpoint
from u2seg.pseudo.stuff.stego.inference import (VOID, center_labels, center_view, center_view_labels,
                                                checkpoint_stuff_map, crf_image, normalise, paste_center_view)
from u2seg.pseudo.stuff.stego.params import StegoInferenceParams

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def seeded():
    sd = {k: torch.from_numpy(v) for k, v in seeded_state_dict().items()}
    return stego_model_from_checkpoint({"state_dict": sd}), CheckpointTokens(sd)


@pytest.fixture(scope="module")
def recorded():
    with np.load(DATA / "stego_inference_reference.npz") as data:
        labels = {k: data[k] for k in data.files}
    return labels, json.loads((DATA / "stego_inference_reference.json").read_text())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return 100 * float((a == b).mean())


@pytest.mark.parametrize("tag", ["argmax", "crf"])
def test_center_view_with_flip_equals_stego(seeded, recorded, tag):
    """STEGO's evaluation (flip, nearest resize + centre crop, CRF in BGR at the crop) pixel for pixel."""
    model, tokens = seeded
    labels, report = recorded
    res = report["res"]
    crf = STEGO_CRF if tag == "crf" else None
    for seed, h, w in FIXTURE_IMAGES:
        rgb = seeded_image(seed, h, w)
        stego = labels[f"seeded_{seed}_{h}x{w}/{tag}"]
        assert stego.shape == (res, res) and len(np.unique(stego)) >= 2  # labels with structure
        ours = center_labels(model, tokens, rgb, StegoInferenceParams(crop="center", crop_size=res), crf)
        assert agreement(ours, stego) >= 99.9
        # without the flip the maps are far from STEGO's: the fixture can tell the two apart
        no_flip = center_labels(model, tokens, rgb, StegoInferenceParams(flip=False, crop="center", crop_size=res), crf)
        assert agreement(no_flip, stego) < 95


def test_full_view_agreement_is_the_documented_one(seeded, recorded):
    """The pipeline's full-image maps seen through STEGO's label transform: the recorded agreement."""
    model, tokens = seeded
    labels, report = recorded
    for seed, h, w in FIXTURE_IMAGES:
        name = f"seeded_{seed}_{h}x{w}"
        rgb = seeded_image(seed, h, w)
        for flip in (True, False):
            full = checkpoint_stuff_map(model, tokens, rgb, report["input_size"], StegoInferenceParams(flip=flip))
            assert full.shape == (h, w) and int(full.max()) < model.num_classes  # every pixel labelled
            got = agreement(center_view_labels(full, report["res"]), labels[f"{name}/argmax"])
            key = "full+flip, argmax" if flip else "full, no flip, argmax"
            assert got == pytest.approx(report["images"][name][key], abs=0.2)


def test_center_view_is_torchvisions_resize_and_crop():
    from torchvision import transforms as T

    for h, w, size in ((72, 112, 64), (120, 80, 64), (60, 60, 64), (333, 500, 320), (481, 320, 320)):
        img = seeded_image(3, h, w)
        want = T.Compose([T.Resize(size, T.InterpolationMode.NEAREST), T.CenterCrop(size)])(Image.fromarray(img))
        assert np.array_equal(center_view(img, size), np.asarray(want))


def test_paste_center_view_round_trip_and_void():
    labels = np.random.default_rng(0).integers(0, 5, (64, 64)).astype(np.uint8)
    for h, w in ((96, 160), (160, 96), (64, 64)):
        full = paste_center_view(labels, h, w)
        assert full.shape == (h, w)
        assert np.array_equal(center_view_labels(full, 64), labels)  # downsampling views lose nothing
        void = full == VOID
        assert void.any() == (h != w)  # outside the crop: void; the long side's margins only
        if h > w:
            assert void[:10].all() and not void[h // 2].any()


def test_crf_image_truncates_as_to_pil_image():
    from torchvision.transforms.functional import to_pil_image

    rgb = seeded_image(4, 40, 48)
    x = normalise(rgb)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    want = np.asarray(to_pil_image(x[0] * std[:, None, None] + mean[:, None, None]))
    got = crf_image(x)
    assert np.array_equal(got, want)
    assert 0 < int((got != rgb).sum())  # the truncation changes some pixels by one level, as in STEGO


def test_inference_params_validate():
    assert StegoInferenceParams() == StegoInferenceParams(flip=True, crop="full", crop_size=320)
    with pytest.raises(ValueError, match="crop"):
        StegoInferenceParams(crop="middle")


def test_stego_infer_flags(synthetic: Synthetic, tmp_path: Path):
    """`stego infer --checkpoint`: flip on by default; --crop center leaves void outside the crop."""
    ckpt = tmp_path / "seeded.ckpt"
    write_seeded_checkpoint(ckpt)
    common = ["stego", "infer", "--manifest", str(synthetic.manifest), "--shard", "0", "--shard-size", str(SHARD_SIZE),
              "--features", str(synthetic.features / "shard_00000.zarr"), "--checkpoint", str(ckpt),
              "--input-size", "32"]
    maps = {}
    for name, extra in (("flip", []), ("noflip", ["--no-flip"]), ("center", ["--crop", "center", "--crop-size", "24"])):
        assert main(common + extra + ["--out-maps", str(tmp_path / name)]) == 0
        maps[name] = np.asarray(Image.open(tmp_path / name / "img_0.png"))
    h, w = SIZES[0]
    assert all(m.shape == (h, w) for m in maps.values())
    # the CLI's maps are the library's, with the flags' settings (image read as the pipeline reads it)
    from u2seg.images import load_rgb
    from u2seg.manifest import image_path

    manifest = json.loads(synthetic.manifest.read_text())
    rgb = load_rgb(image_path(manifest, manifest["images"][0]))
    state = torch.load(ckpt)["state_dict"]
    model, tokens = stego_model_from_checkpoint({"state_dict": state}), CheckpointTokens(state)
    for name, params in (("flip", StegoInferenceParams()), ("noflip", StegoInferenceParams(flip=False)),
                         ("center", StegoInferenceParams(crop="center", crop_size=24))):
        assert np.array_equal(maps[name], checkpoint_stuff_map(model, tokens, rgb, 32, params)), name
    assert int(maps["flip"].max()) < 5
    assert (maps["center"] == VOID).any() and (maps["center"] < 5).any()
    record = json.loads((tmp_path / "center.config.json").read_text())
    assert record["args"]["crop"] == "center" and record["args"]["flip"] is True
    assert main(common + ["--crop", "center", "--crop-size", "20", "--out-maps", str(tmp_path / "bad")]) == 1

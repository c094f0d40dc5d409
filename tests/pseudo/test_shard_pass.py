"""``u2seg shard-pass`` (the fused per-shard pass) against the separate stage CLIs on the same images: the same
files (MaskCut json + gallery, embeddings, STEGO maps, the stages' config records), with the zarr shard kept
or not, and the one-forward STEGO path against the two-forward one (seeded random weights)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from u2seg.cli import main

from tests.pseudo.conftest import SIZES
from tests.pseudo.test_stego_cli import official_like_checkpoint
from tests.script_module import load_script

REPO = Path(__file__).resolve().parents[2]
SHARD_SIZE = 3


def _digest_module():
    return load_script(REPO / "benchmarks" / "outputs_digest.py")


def write_images(root: Path) -> Path:
    """Five textured images of different sizes and their manifest (two shards of 3)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    images = []
    for i, (h, w) in enumerate(SIZES):
        arr = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        arr[h // 4: 3 * h // 4, w // 4: 3 * w // 4] += np.array([180, 120, 20], np.uint8)
        Image.fromarray(arr).save(img_dir / f"img_{i}.png")
        images.append({"id": 100 + i, "file_name": f"img_{i}.png", "width": w, "height": h})
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"dataset": {"kind": "images", "root": str(img_dir)}, "root": str(img_dir),
                                    "images": images, "annotations": None}))
    return manifest


def segments(res: Path, manifest: Path, shard: int, backbone: str, weights: str, size: int,
             checkpoint: Path | None, flip: bool = False) -> dict[str, list[str]]:
    """Each stage's flags for one shard, as the rules pass them (outputs under ``res``)."""
    zarr = str(res / "features" / f"shard_{shard:05d}.zarr")
    common = ["--manifest", str(manifest)]
    shard_flags = ["--shard", str(shard), "--shard-size", str(SHARD_SIZE)]
    out = {
        "features": [*common, *shard_flags, "--backbone", backbone, f"--weights={weights}", "--input-size",
                     str(size), "--batch-size", "2", "--device", "cpu", "--threads", "1", "--out", zarr],
        "maskcut": [*common, "--features", zarr, "--out", str(res / "maskcut" / f"shard_{shard:05d}.json"),
                    "--gallery", str(res / "maskcut" / f"shard_{shard:05d}_gallery"), "--gallery-size", "3",
                    "--n-masks", "2", "--device", "cpu", "--threads", "1"],
        "embed": [*common, *shard_flags, "--masks", str(res / "maskcut" / f"shard_{shard:05d}.json"),
                  "--features", zarr, "--method", "pooled", "--device", "cpu", "--threads", "1",
                  "--out", str(res / "pseudo" / "embed" / f"shard_{shard:05d}.npz")],
    }
    if checkpoint is not None:
        out["stego"] = ["infer", *common, *shard_flags, "--features", zarr, "--checkpoint", str(checkpoint),
                        "--input-size", str(size), "--flip" if flip else "--no-flip", "--device", "cpu",
                        "--threads", "1", "--out-maps", str(res / "pseudo" / "stego" / "maps" / f"shard_{shard:05d}")]
    return out


def run_separate(res: Path, segs: dict[str, list[str]]) -> None:
    for name in ("features", "maskcut", "embed", "stego"):
        if name in segs:
            assert main([name, *segs[name]]) == 0, name


def run_fused(segs: dict[str, list[str]], keep: bool = True) -> None:
    argv = ["shard-pass", "--keep-features" if keep else "--no-keep-features"]
    for name in ("features", "maskcut", "embed", "stego"):
        if name in segs:
            argv += ["::", name, *segs[name]]
    assert main(argv) == 0


def digest_tree(root: Path) -> dict[str, str]:
    """benchmarks/outputs_digest.py's digest (json files without their `seconds`, e.g. the zarr attrs)."""
    return _digest_module().digest(root)


def test_fused_pass_writes_the_separate_jobs_files(tmp_path: Path, monkeypatch):
    manifest = write_images(tmp_path)
    sep, fused, nokeep = tmp_path / "sep", tmp_path / "fused", tmp_path / "nokeep"
    for shard in (0, 1):
        run_separate(sep, segments(sep, manifest, shard, "random_vit_tiny", "", 64, None))
        run_fused(segments(fused, manifest, shard, "random_vit_tiny", "", 64, None))
    reads = []

    def counting_open(path, *args, **kwargs):
        reads.append(str(path))
        return open(path, *args, **kwargs)

    with monkeypatch.context() as m:  # features not kept: MaskCut and embed read them in memory, no zarr anywhere
        m.setattr("u2seg.features.store_shard", lambda *a: pytest.fail("--no-keep-features wrote a feature shard"))
        m.setattr("u2seg.manifest.open", counting_open, raising=False)
        for shard in (0, 1):
            run_fused(segments(nokeep, manifest, shard, "random_vit_tiny", "", 64, None), keep=False)
    assert reads == [str(manifest)] * 2  # one manifest read per pass, handed to MaskCut and embed
    a, b, c = digest_tree(sep), digest_tree(fused), digest_tree(nokeep)
    assert any(k.startswith("maskcut/shard_00001_gallery/") for k in a)  # the gallery sample is not empty
    masks = json.loads((sep / "maskcut" / "shard_00000.json").read_text())
    assert masks["annotations"], "the comparison needs masks"
    assert _digest_module().compare(a, b) == []
    # features not kept: no zarr store, every other file the same (the features record included)
    assert not (nokeep / "features" / "shard_00000.zarr").exists()
    assert (nokeep / "features" / "shard_00000.config.json").is_file()
    assert _digest_module().compare({k: v for k, v in a.items() if ".zarr/" not in k}, c) == []


def dino_weights_and_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A STEGO checkpoint (ViT-S/8 layout, random weights) and a DINO ViT-S/8 weights file with its ViT."""
    ckpt = tmp_path / "stego.ckpt"
    sd = official_like_checkpoint(ckpt, embed=384, depth=12, patch=8, dim=6, k=4)
    dino = tmp_path / "dino_deitsmall8_pretrain.pth"
    torch.save({k[len("net.model."):]: v for k, v in sd.items() if k.startswith("net.model.")}, dino)
    return dino, ckpt


@pytest.mark.slow
@pytest.mark.parametrize("flip", [False, True])
def test_one_forward_stego_maps_equal_the_two_forward_maps(tmp_path: Path, caplog, flip: bool):
    """Without flip averaging the features' forward serves STEGO; with it (STEGO's inference) the pass
    falls back to `stego infer`'s own forwards. Either way the maps equal the separate jobs'."""
    manifest = write_images(tmp_path)
    dino, ckpt = dino_weights_and_checkpoint(tmp_path)
    sep, fused = tmp_path / "sep", tmp_path / "fused"
    run_separate(sep, segments(sep, manifest, 0, "dino_vits8", str(dino), 48, ckpt, flip))
    with caplog.at_level(logging.INFO, logger="u2seg.shard_pass_cli"):
        run_fused(segments(fused, manifest, 0, "dino_vits8", str(dino), 48, ckpt, flip), keep=False)
    assert ("second forward" if flip else "one forward") in caplog.text
    maps = Path("pseudo/stego/maps/shard_00000")
    names = sorted(p.name for p in (sep / maps).glob("*.png"))
    assert names == [f"img_{i}.png" for i in range(SHARD_SIZE)]
    from u2seg.pseudo.io import read_png

    for name in names:
        a, b = read_png(sep / maps / name), read_png(fused / maps / name)
        assert a.shape == b.shape
        assert (a == b).mean() >= 0.999, name  # batched vs one-image forwards: float rounding only
    a, b = digest_tree(sep), digest_tree(fused)
    same = {k for k in a.keys() & b.keys() if a[k] == b[k]}
    assert {"maskcut/shard_00000.json", "pseudo/embed/shard_00000.npz",
            "pseudo/stego/maps/shard_00000.config.json"} <= same


def test_shares_forward_decides_by_the_weights(tmp_path: Path):
    from u2seg.backbones import build_backbone
    from u2seg.pseudo.stuff.stego.checkpoint import load_stego_checkpoint
    from u2seg.shard_pass import shares_forward

    dino, ckpt = dino_weights_and_checkpoint(tmp_path)
    backbone = build_backbone("dino_vits8", str(dino))
    _, tokens = load_stego_checkpoint(str(ckpt))
    assert shares_forward(backbone, tokens)
    with torch.no_grad():
        tokens.vit.blocks[5].mlp.fc1.weight[0, 0] += 1e-3  # same name and layout, other weights
    assert not shares_forward(backbone, tokens)
    # the same weights under a backbone of another position-embedding rule: a second forward
    assert not shares_forward(build_backbone("random_vit_tiny"), load_stego_checkpoint(str(ckpt))[1])


def test_one_forward_tokens_equal_the_checkpoint_vit_tokens(tmp_path: Path):
    """The tokens the feature forward captures are the STEGO checkpoint ViT's own (same batch)."""
    from u2seg.backbones import build_backbone
    from u2seg.images import load_rgb
    from u2seg.manifest import load_manifest
    from u2seg.pseudo.stuff.stego.checkpoint import image_tokens, load_stego_checkpoint
    from u2seg.shard_pass import compute_features

    manifest_path = write_images(tmp_path)
    dino, ckpt = dino_weights_and_checkpoint(tmp_path)
    manifest = load_manifest(manifest_path)
    seen = []
    compute_features(manifest, 0, SHARD_SIZE, build_backbone("dino_vits8", str(dino)), 48, SHARD_SIZE, "s.zarr",
                     capture_tokens=True, on_batch=lambda metas, rgb, tok: seen.append((rgb, tok)))
    (rgb, tok), = seen
    _, tokens = load_stego_checkpoint(str(ckpt))
    ref = image_tokens(tokens, rgb, 48)
    assert tok.shape == ref.shape == (SHARD_SIZE, 384, 6, 6)
    assert np.allclose(tok, ref, atol=1e-5)
    assert [load_rgb(Path(manifest["root"]) / f"img_{i}.png").shape for i in range(SHARD_SIZE)] == \
        [r.shape for r in rgb]


def test_segments_are_checked(tmp_path: Path):
    from u2seg.shard_pass_cli import split_segments

    with pytest.raises(SystemExit, match="missing segment"):
        split_segments(["::", "features", "--out", "x", "::", "maskcut"])
    with pytest.raises(SystemExit, match="stego infer"):
        split_segments(["::", "features", "::", "maskcut", "::", "embed", "::", "stego", "train"])
    got = split_segments(["::", "features", "--a", "1", "::", "maskcut", "::", "embed", "--b"])
    assert got == {"features": ["--a", "1"], "maskcut": [], "embed": ["--b"]}
    manifest = write_images(tmp_path)
    segs = segments(tmp_path / "r", manifest, 0, "random_vit_tiny", "", 64, None)
    segs["embed"][segs["embed"].index("--shard") + 1] = "1"  # another shard than the features segment
    argv = ["shard-pass"] + [t for name in ("features", "maskcut", "embed") for t in ("::", name, *segs[name])]
    assert main(argv) == 1  # a UserError naming the disagreement, before any work
    assert not (tmp_path / "r" / "features").exists()

"""``u2seg stego knn|train|infer|import`` + ``cluster-stuff --model stego*`` on synthetic shards, and the
official-checkpoint reader (a checkpoint with STEGO's key structure and random weights)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.pseudo.conftest import GRID, SHARD_SIZE, SIZES, Synthetic
from u2seg.cli import main
from u2seg.pseudo.stuff.registry import load_stuff_model

S = 2
MARKER: list[str] = []


def stego_stages(data: Synthetic, out: Path, steps: int = 8) -> Path:
    """knn + train + per-shard infer + gather into out/stuff (as rules/stego.smk runs them)."""
    common = ["--manifest", str(data.manifest), "--shard-size", str(SHARD_SIZE)]
    assert main(["stego", "knn", *common, "--features-dir", str(data.features), "--knn", "4",
                 "--out", str(out / "knn.npz")]) == 0
    assert main(["stego", "train", *common, "--features-dir", str(data.features), "--knn-table", str(out / "knn.npz"),
                 "--k", str(S), "--dim", "6", "--batch-size", "4", "--max-steps", str(steps), "--num-neighbors", "3",
                 "--feature-samples", "4", "--neg-samples", "2", "--checkpoint-period", "4", "--log-period", "2",
                 "--cluster-lr", "0.05", "--work-dir", str(out / "work"), "--out-model", str(out / "model.npz"),
                 "--out-history", str(out / "history.json"), "--out-curve", str(out / "loss.png")]) == 0
    for s in range(3):
        assert main(["stego", "infer", *common, "--shard", str(s), "--features",
                     str(data.features / f"shard_{s:05d}.zarr"), "--model", str(out / "model.npz"),
                     "--out-maps", str(out / "maps" / f"shard_{s:05d}")]) == 0
    assert main(["cluster-stuff", *common, "--features-dir", str(data.features), "--k", str(S), "--model", "stego",
                 "--stego-maps-dir", str(out / "maps"), "--stego-model", str(out / "model.npz"),
                 "--out-model", str(out / "stuff_model.npz"), "--out-maps", str(out / "stuff"),
                 "--summary", str(out / "stuff_summary.json")]) == 0
    return out


def test_stego_stages_write_the_kmeans_outputs(synthetic: Synthetic, tmp_path: Path):
    out = stego_stages(synthetic, tmp_path / "pseudo")
    knn = np.load(out / "knn.npz")
    assert knn["nns"].shape == (5 * 5, 4) and knn["nns"][:, 0].tolist() == list(range(25))  # 5 crops per image
    hist = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in hist["history"]] == [2, 4, 6, 8]
    assert hist["crops"] == 25 and hist["peak_rss_mb"] > 0
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "stuff_summary.json").read_text())
    assert summary["model"] == "stego" and summary["images"] == 5 and summary["k"] == S
    model = load_stuff_model(out / "stuff_model.npz")
    assert model.kind == "stego" and model.num_classes == S
    for im, (h, w) in zip(synthetic.images, SIZES):
        png = np.asarray(Image.open(out / "stuff" / (Path(im["file_name"]).stem + ".png")))
        assert png.shape == (h, w) and png.dtype == np.uint8 and int(png.max()) < S
    # resuming a finished run: the newest checkpoint is at max_steps, nothing retrains, same model
    before = (out / "model.npz").read_bytes()
    stego_stages(synthetic, out)
    assert np.allclose(load_stuff_model(out / "model.npz").scores(np.ones((8, GRID, GRID), np.float32)),
                       load_stuff_model_bytes(before, tmp_path).scores(np.ones((8, GRID, GRID), np.float32)))


def load_stuff_model_bytes(data: bytes, tmp: Path):
    path = tmp / "copy.npz"
    path.write_bytes(data)
    return load_stuff_model(path)


def test_gather_names_a_missing_shard(synthetic: Synthetic, tmp_path: Path):
    out = stego_stages(synthetic, tmp_path / "pseudo", steps=2)
    (out / "maps" / "shard_00001" / "_shard.json").unlink()
    code = main(["cluster-stuff", "--manifest", str(synthetic.manifest), "--shard-size", str(SHARD_SIZE),
                 "--features-dir", str(synthetic.features), "--k", str(S), "--model", "stego",
                 "--stego-maps-dir", str(out / "maps"), "--stego-model", str(out / "model.npz"),
                 "--out-model", str(tmp_path / "m.npz"), "--out-maps", str(tmp_path / "stuff"),
                 "--summary", str(tmp_path / "s.json")])
    assert code == 1 and not (tmp_path / "stuff").exists()


# ----------------------------------------------------------------------------- official checkpoint
def _mark(*args):
    """Would run if the checkpoint's pickled hyper-parameters were executed."""
    MARKER.append("executed")
    return dict(args=args)


class FakeDictConfig:
    """Stands for OmegaConf's DictConfig in a Lightning checkpoint: unpickling it calls ``_mark``."""

    def __reduce__(self):
        return (_mark, ({"model_type": "vit_small", "dino_patch_size": 8, "dim": 6},))


class FakeNode:
    """Like OmegaConf's ValueNode: pickled by its state ({'_val': ...}); unpickling imports this module."""

    def __init__(self, value):
        self._val = value

    def __setstate__(self, state):
        MARKER.append("node executed")
        self.__dict__.update(state)


class FakeDictConfigState:
    """Like a DictConfig: state {'_content': {key: node}}."""

    def __init__(self, content):
        self._content = {k: FakeNode(v) for k, v in content.items()}
        self._metadata = FakeNode("meta")

    def __setstate__(self, state):
        MARKER.append("config executed")
        self.__dict__.update(state)


def official_like_checkpoint(path: Path, embed: int = 64, depth: int = 2, patch: int = 8, dim: int = 6,
                             k: int = 4, cfg=None) -> dict[str, torch.Tensor]:
    """A LitUnsupervisedSegmenter-shaped Lightning checkpoint with random weights (small ViT)."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=224, patch_size=patch, embed_dim=embed, depth=depth, num_heads=embed // 64,
                            num_classes=0)
    sd = {f"net.model.{n}": v for n, v in vit.state_dict().items()}
    sd.update({"net.cluster1.0.weight": torch.randn(dim, embed, 1, 1), "net.cluster1.0.bias": torch.randn(dim),
               "net.cluster2.0.weight": torch.randn(embed, embed, 1, 1), "net.cluster2.0.bias": torch.randn(embed),
               "net.cluster2.2.weight": torch.randn(dim, embed, 1, 1), "net.cluster2.2.bias": torch.randn(dim),
               "cluster_probe.clusters": torch.randn(k, dim), "train_cluster_probe.clusters": torch.randn(k, dim),
               "linear_probe.weight": torch.randn(k, dim, 1, 1), "linear_probe.bias": torch.randn(k),
               "decoder.weight": torch.randn(embed, dim, 1, 1), "decoder.bias": torch.randn(embed)})
    torch.save({"epoch": 0, "global_step": 7000, "pytorch-lightning_version": "1.4.9", "state_dict": sd,
                "optimizer_states": [], "lr_schedulers": [],
                "hyper_parameters": {"n_classes": k, "cfg": FakeDictConfig() if cfg is None else cfg}}, path)
    return sd


def test_official_checkpoint_loads_without_executing_code(tmp_path: Path):
    from u2seg.pseudo.stuff.stego.checkpoint import hyper_parameter, load_stego_checkpoint, read_checkpoint

    path = tmp_path / "cocostuff27_like.ckpt"
    sd = official_like_checkpoint(path)
    MARKER.clear()
    obj = read_checkpoint(path)
    assert MARKER == []  # the pickled reduce was never called
    assert obj["global_step"] == 7000 and hyper_parameter(obj, "model_type") == "vit_small"
    model, tokens = load_stego_checkpoint(str(path))
    assert MARKER == []
    assert model.num_classes == 4 and model.head.dim == 6 and tokens.patch == 8
    # labels come from the cluster probe: recompute them by hand from the checkpoint tensors
    dense = torch.randn(64, 5, 7)
    lin = torch.einsum("oc,chw->ohw", sd["net.cluster1.0.weight"][:, :, 0, 0], dense) + sd["net.cluster1.0.bias"][:, None, None]
    hid = torch.relu(torch.einsum("oc,chw->ohw", sd["net.cluster2.0.weight"][:, :, 0, 0], dense)
                     + sd["net.cluster2.0.bias"][:, None, None])
    code = lin + torch.einsum("oc,chw->ohw", sd["net.cluster2.2.weight"][:, :, 0, 0], hid) + sd["net.cluster2.2.bias"][:, None, None]
    cos = torch.einsum("chw,kc->khw", torch.nn.functional.normalize(code, dim=0),
                       torch.nn.functional.normalize(sd["cluster_probe.clusters"], dim=1))
    assert np.allclose(model.scores(dense.numpy()), cos.numpy(), atol=1e-5)
    # the tokens: the checkpoint's ViT, CLS dropped, (C, H/8, W/8)
    from u2seg.pseudo.stuff.stego.checkpoint import image_tokens

    feats = image_tokens(tokens, [np.zeros((30, 50, 3), np.uint8)], 64)
    assert feats.shape == (1, 64, 8, 8)


def test_checkpoint_hyper_parameters_in_config_nodes(tmp_path: Path):
    from u2seg.pseudo.stuff.stego.checkpoint import hyper_parameter, read_checkpoint

    path = tmp_path / "nodes.ckpt"
    official_like_checkpoint(path, cfg=FakeDictConfigState({"model_type": "vit_base", "dino_patch_size": 8}))
    MARKER.clear()
    obj = read_checkpoint(path)
    assert MARKER == []
    assert hyper_parameter(obj, "model_type") == "vit_base" and hyper_parameter(obj, "dino_patch_size") == 8
    assert hyper_parameter(obj, "missing") is None


def test_checkpoint_with_a_real_omegaconf_dictconfig(tmp_path: Path):
    omegaconf = pytest.importorskip("omegaconf", reason="omegaconf not installed (only needed to build this file)")
    from u2seg.pseudo.stuff.stego.checkpoint import hyper_parameter, load_stego_checkpoint, read_checkpoint

    path = tmp_path / "omegaconf.ckpt"
    official_like_checkpoint(path, cfg=omegaconf.OmegaConf.create({"model_type": "vit_base", "dim": 6,
                                                                   "pos_inter_weight": 1.0}))
    obj = read_checkpoint(path)
    assert hyper_parameter(obj, "model_type") == "vit_base" and hyper_parameter(obj, "dim") == 6
    assert load_stego_checkpoint(str(path))[0].head.dim == 6


def test_stego_import_and_checkpoint_infer(synthetic: Synthetic, tmp_path: Path):
    path = tmp_path / "official.ckpt"
    official_like_checkpoint(path)
    assert main(["stego", "import", "--checkpoint", str(path), "--out", str(tmp_path / "model.npz")]) == 0
    assert load_stuff_model(tmp_path / "model.npz").num_classes == 4
    assert main(["stego", "infer", "--manifest", str(synthetic.manifest), "--shard", "0", "--shard-size",
                 str(SHARD_SIZE), "--features", str(synthetic.features / "shard_00000.zarr"),
                 "--checkpoint", str(path), "--input-size", "32", "--out-maps", str(tmp_path / "maps")]) == 0
    png = np.asarray(Image.open(tmp_path / "maps" / "img_0.png"))
    assert png.shape == SIZES[0] and int(png.max()) < 4
    bad = tmp_path / "not_stego.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, bad)
    assert main(["stego", "import", "--checkpoint", str(bad), "--out", str(tmp_path / "x.npz")]) == 1


def test_infer_refuses_checkpoint_view_flags_with_a_trained_model(synthetic: Synthetic, tmp_path: Path, caplog):
    """The view flags act on --checkpoint inference only: with --model they are refused, not ignored."""
    code = main(["stego", "infer", "--manifest", str(synthetic.manifest), "--shard-size", str(SHARD_SIZE),
                 "--shard", "0", "--features", str(synthetic.features / "shard_00000.zarr"),
                 "--model", str(tmp_path / "model.npz"), "--crop", "center", "--out-maps", str(tmp_path / "maps")])
    assert code == 1 and not (tmp_path / "maps").exists()
    assert "--checkpoint inference only" in caplog.text

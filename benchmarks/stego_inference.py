"""``stego_checkpoint`` inference vs STEGO's own evaluation code on the same images and seeded weights.

STEGO (mhamilton723/STEGO at eb4d6b5) is NOT part of this repository and is imported only when this
script runs. Its ``src/`` must import on this machine: STEGO was written for torch 1.x, so a small module
of your own (``--prelude``, imported first; kept outside the repository) has to stand in for what is gone
(``torch._six.string_classes``, ``torch.utils.tensorboard.summary.hparams``, the ``wget`` package) and make
``nn.Module.cuda`` a no-op on a CPU machine. Then, from outside the repository:

    PYTHONPATH=<prelude dir>:<repo>/workflow python <repo>/benchmarks/stego_inference.py \\
        --stego-src <STEGO>/src --prelude stego_shims --out-json out.json [--out-npz labels.npz] \\
        [--res 320 --input-size 480 --images a.jpg b.jpg ...]

STEGO's side is the body of ``eval_segmentation.py``'s loop for one image (``get_transform(res, False,
"center")``, ``DinoFeaturizer.forward`` on the image and its flip, the averaged code upsampled to the crop,
``ClusterLookup(code, 2, log_probs=True)``, ``dense_crf``, argmax). The project's side is
:func:`u2seg.pseudo.stuff.stego.inference.checkpoint_stuff_map` in four settings; full-image maps are
compared through STEGO's label transform (nearest resize + centre crop). Weights and default images are
the seeded ones of ``tests/pseudo/stego_seeded.py``; ``--out-npz`` writes STEGO's label maps (the test
fixture ``tests/pseudo/data/stego_inference_reference.npz`` is this script's output with the defaults).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pseudo.stego_seeded import FIXTURE_IMAGES, seeded_image, seeded_state_dict  # noqa: E402


def stego_net(vits, featurizer_cls, sd: dict, embed: int, depth: int, patch: int, dim: int):
    """STEGO's ``DinoFeaturizer`` around a DINO ViT of the checkpoint's size (its constructor hard-codes the
    ViT-S/B sizes and downloads weights, so the fields are set here; ``forward`` is STEGO's own)."""
    net = featurizer_cls.__new__(featurizer_cls)
    torch.nn.Module.__init__(net)
    net.cfg = SimpleNamespace(dino_patch_size=patch, dino_feat_type="feat", dropout=True, projection_type="nonlinear")
    net.dim, net.patch_size, net.feat_type, net.proj_type, net.n_feats = dim, patch, "feat", "nonlinear", embed
    net.model = vits.VisionTransformer(patch_size=patch, embed_dim=embed, depth=depth, num_heads=max(1, embed // 64),
                                       mlp_ratio=4, qkv_bias=True, norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6))
    net.dropout = torch.nn.Dropout2d(p=.1)
    net.cluster1 = net.make_clusterer(embed)
    net.cluster2 = net.make_nonlinear_clusterer(embed)
    net.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in sd.items() if k.startswith("net.")}, strict=True)
    return net.eval()


def stego_predict(ref: SimpleNamespace, net, probe, pil: Image.Image, res: int, run_crf: bool) -> np.ndarray:
    """The body of eval_segmentation.py's loop for one image: (res, res) uint8 cluster labels."""
    img = ref.get_transform(res, False, "center")(pil)[None]
    with torch.no_grad():
        _, code1 = net(img)
        _, code2 = net(img.flip(dims=[3]))
        code = (code1 + code2.flip(dims=[3])) / 2
        code = torch.nn.functional.interpolate(code, (res, res), mode="bilinear", align_corners=False)
        cluster_probs = probe(code, 2, log_probs=True)
        if run_crf:
            return torch.from_numpy(ref.dense_crf(img[0], cluster_probs[0])).argmax(0).numpy().astype(np.uint8)
        return cluster_probs.argmax(1)[0].numpy().astype(np.uint8)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stego-src", type=Path, required=True, help="STEGO's src/ folder")
    p.add_argument("--prelude", default=None, help="module imported before STEGO's (shims for a newer torch)")
    p.add_argument("--images", nargs="*", default=None, help="image files (default: the seeded fixture images)")
    p.add_argument("--res", type=int, default=64, help="STEGO's evaluation res (its eval_config: 320)")
    p.add_argument("--input-size", type=int, default=64, help="the project's full view: square input size")
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-npz", type=Path, default=None, help="STEGO's label maps")
    p.add_argument("--out-json", type=Path, required=True, help="agreement per image and setting")
    args = p.parse_args()
    if args.prelude:
        importlib.import_module(args.prelude)
    sys.path.insert(0, str(args.stego_src))
    vits = importlib.import_module("dino.vision_transformer")
    modules = importlib.import_module("modules")
    ref = SimpleNamespace(get_transform=importlib.import_module("utils").get_transform,
                          dense_crf=importlib.import_module("crf").dense_crf)

    from u2seg.crf import STEGO_CRF
    from u2seg.pseudo.stuff.stego.checkpoint import CheckpointTokens, stego_model_from_checkpoint
    from u2seg.pseudo.stuff.stego.inference import center_labels, center_view_labels, checkpoint_stuff_map
    from u2seg.pseudo.stuff.stego.params import StegoInferenceParams

    sd = seeded_state_dict(args.seed, embed=args.embed, depth=args.depth, patch=args.patch)
    dim, k = sd["net.cluster1.0.weight"].shape[0], sd["cluster_probe.clusters"].shape[0]
    net = stego_net(vits, modules.DinoFeaturizer, sd, args.embed, args.depth, args.patch, dim)
    probe = modules.ClusterLookup(dim, k)
    with torch.no_grad():
        probe.clusters.copy_(torch.from_numpy(sd["cluster_probe.clusters"]))
    tsd = {key: torch.from_numpy(v) for key, v in sd.items()}
    ours, tokens = stego_model_from_checkpoint({"state_dict": tsd}), CheckpointTokens(tsd)

    if args.images:
        named = [(Path(f).name, np.asarray(Image.open(f).convert("RGB"))) for f in args.images]
    else:
        named = [(f"seeded_{s}_{h}x{w}", seeded_image(s, h, w)) for s, h, w in FIXTURE_IMAGES]
    settings = {"center+flip": StegoInferenceParams(flip=True, crop="center", crop_size=args.res),
                "center, no flip": StegoInferenceParams(flip=False, crop="center", crop_size=args.res),
                "full+flip": StegoInferenceParams(flip=True, crop="full"),
                "full, no flip": StegoInferenceParams(flip=False, crop="full")}
    arrays: dict[str, np.ndarray] = {}
    report: dict = {key: getattr(args, key) for key in ("res", "input_size", "embed", "depth", "patch", "seed")}
    report["images"] = {}
    for name, rgb in named:
        report["images"][name] = {}
        for run_crf in (False, True):
            tag = "crf" if run_crf else "argmax"
            stego = stego_predict(ref, net, probe, Image.fromarray(rgb), args.res, run_crf)
            arrays[f"{name}/{tag}"] = stego
            crf = STEGO_CRF if run_crf else None
            for label, params in settings.items():
                if params.crop == "center":  # STEGO's output grid itself
                    view = center_labels(ours, tokens, rgb, params, crf)
                else:  # the full-image map seen through STEGO's label transform
                    view = center_view_labels(checkpoint_stuff_map(ours, tokens, rgb, args.input_size, params, crf),
                                              args.res)
                agree = 100 * float((view == stego).mean())
                report["images"][name][f"{label}, {tag}"] = round(agree, 3)
                print(f"{name} {label:16s} {tag:6s} agreement {agree:.3f} %", flush=True)
    keys = next(iter(report["images"].values())).keys()
    report["mean"] = {key: round(float(np.mean([v[key] for v in report["images"].values()])), 3) for key in keys}
    print(json.dumps(report["mean"], indent=1))
    args.out_json.write_text(json.dumps(report, indent=1) + "\n")
    if args.out_npz:
        np.savez_compressed(args.out_npz, **arrays)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Compare u2seg's STEGO loss with STEGO's own code on identical inputs (fidelity check).

STEGO's ``src/modules.py`` is NOT part of this repository: put it in a folder outside the worktree with
stub ``utils.py`` (torch imports only) and an empty ``dino/vision_transformer.py``, then
    python benchmarks/stego_reference.py --stego-src /tmp/stego_ref
Both sides draw their sample coordinates and negative permutations from the same seeded torch RNG
(the same calls in the same order), so the loss values must agree to float32 rounding.
"""
from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

import torch

from u2seg.pseudo.stuff.stego.model import ClusterProbe, StegoLossParams, correspondence_loss, derangement


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stego-src", required=True, help="folder holding STEGO's modules.py")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, args.stego_src)
    import modules as ref  # STEGO's own module

    worst = 0.0
    worst_cluster = 0.0
    worst_grad = 0.0
    for trial in range(args.trials):
        g = torch.Generator().manual_seed(trial)
        b, c, d, h, w = 6, 24, 7, 9 + trial % 3, 11
        feats, feats_pos = torch.randn(b, c, h, w, generator=g), torch.randn(b, c, h, w, generator=g)
        code, code_pos = torch.randn(b, d, h, w, generator=g), torch.randn(b, d, h, w, generator=g)
        p = StegoLossParams(pointwise=trial % 2 == 0, zero_clamp=trial % 4 < 2, stabilize=trial % 5 == 0)
        cfg = SimpleNamespace(feature_samples=p.feature_samples, neg_samples=p.neg_samples, use_salience=False,
                              pointwise=p.pointwise, zero_clamp=p.zero_clamp, stabalize=p.stabilize,
                              pos_intra_shift=p.pos_intra_shift, pos_inter_shift=p.pos_inter_shift,
                              neg_inter_shift=p.neg_inter_shift)
        weights = (p.pos_intra_weight, p.pos_inter_weight, p.neg_inter_weight)
        code_r, code_pos_r = code.clone().requires_grad_(True), code_pos.clone().requires_grad_(True)
        torch.manual_seed(1000 + trial)
        r = ref.ContrastiveCorrelationLoss(cfg)(feats, feats_pos, None, None, code_r, code_pos_r)
        ref_vals = [float(r[0]), float(r[2]), float(r[4].mean())]
        (weights[0] * r[0] + weights[1] * r[2] + weights[2] * r[4].mean()).backward()
        torch.manual_seed(1000 + trial)
        shape = (b, p.feature_samples, p.feature_samples, 2)
        c1 = torch.rand(shape) * 2 - 1
        c2 = torch.rand(shape) * 2 - 1
        perms = [derangement(b) for _ in range(p.neg_samples)]
        # STEGO's sample() transposes the grid; the point order does not change any mean.
        flat = [x.permute(0, 2, 1, 3).reshape(b, -1, 2) for x in (c1, c2)]
        code_o, code_pos_o = code.clone().requires_grad_(True), code_pos.clone().requires_grad_(True)
        ours = correspondence_loss(feats, feats_pos, code_o, code_pos_o, p, flat[0], flat[1], perms)
        our_vals = [float(ours.self_loss), float(ours.knn_loss), float(ours.rand_loss)]
        ours.total.backward()
        diff = max(abs(x - y) for x, y in zip(ref_vals, our_vals))
        grad_diff = max(float((code_r.grad - code_o.grad).abs().max()),
                        float((code_pos_r.grad - code_pos_o.grad).abs().max()))
        worst_grad = max(worst_grad, grad_diff)
        worst = max(worst, diff)
        probe_ref = ref.ClusterLookup(d, 27)
        probe = ClusterProbe(d, 27)
        with torch.no_grad():
            probe.clusters.copy_(probe_ref.clusters)
        worst_cluster = max(worst_cluster, abs(float(probe_ref(code, None)[0]) - float(probe.loss(code))),
                            abs(float(probe_ref(code, 2.0)[0]) - float(probe.loss(code, 2.0))))
        print(f"trial {trial}: STEGO self/knn/rand {ref_vals}  u2seg {our_vals}  max |diff| {diff:.2e}"
              f"  grad {grad_diff:.2e}")
    print(f"max |diff| over {args.trials} trials: correspondence terms {worst:.3e}, gradients of the weighted "
          f"sum w.r.t. both code maps {worst_grad:.3e}, cluster loss {worst_cluster:.3e}")
    return 0 if max(worst, worst_cluster, worst_grad) < 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())

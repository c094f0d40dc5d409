"""MaskCut (docs/method.md §3): class-agnostic instance pseudo-masks from dense patch features.

Modules: ``affinity`` (binarised cosine graph), ``eigen`` (second generalized eigenvector: dense
LAPACK reference and a fast batched block-Krylov solver), ``bipartition`` (foreground rule, seed
component), ``refine`` (the torch-free CPU half: CRF refinement, filter, resize), ``image_job`` (that half
for one image of a shard, in a CPU worker), ``algorithm`` (the pure per-image pipeline), ``cli`` /
``merge`` (the ``u2seg maskcut`` / ``u2seg merge-masks`` sub-commands), ``ap`` (class-agnostic
COCO AP of a masks json).
"""
# Nothing is imported here: `u2seg merge-masks` must not pay for importing torch.
# Entry points: u2seg.maskcut.algorithm.maskcut_image / maskcut_batch / MaskCutParams.

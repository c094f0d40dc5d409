"""Panoptic Cascade Mask R-CNN (U2Seg's detector, docs/method.md §7) built from torchvision parts.

Modules: ``model`` (architecture), ``losses`` (DropLoss), ``data`` (pseudo-label dataset,
augmentation, copy-paste), ``checkpoint`` (atomic save / safe load), ``train`` / ``predict`` /
``selftrain`` (stage functions with thin CLIs) and ``d2_import`` (detectron2 checkpoints).
"""

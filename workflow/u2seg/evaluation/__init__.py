"""Evaluation (docs/method.md §8): class-agnostic and cluster-matched AP, PQ / SQ / RQ, PixelAcc / mIoU.

Modules: ``gt`` (ground truth), ``matching`` (cluster -> class mappings), ``instance`` (AP via
pycocotools), ``panoptic`` (PQ), ``semantic`` (confusion matrices, 27- and 16-class protocols),
``download`` (COCO val2017 + annotations), ``cli`` (``u2seg evaluate``).
"""

"""u2seg: unsupervised universal image segmentation (U2Seg) as a resumable pipeline."""

__version__ = "0.1.0"

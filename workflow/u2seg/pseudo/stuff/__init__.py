"""Stuff pseudo-labels (docs/method.md §5): the stuff models (k-means, STEGO) and their per-image label maps."""

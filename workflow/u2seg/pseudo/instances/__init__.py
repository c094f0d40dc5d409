"""Instance pseudo-labels (docs/method.md §4): per-mask embeddings of the MaskCut masks and their k-means clusters."""

"""Instance pseudo-labels (spec 4): per-mask embeddings of the MaskCut masks and their k-means clusters."""

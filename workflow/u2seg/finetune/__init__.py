"""Few-shot fine-tuning: labelled COCO subsets and the fine-tuning driver."""

"""Panoptic pseudo-labels (docs/method.md §6): the thing/stuff merge, its sharded form, concatenation and validation."""

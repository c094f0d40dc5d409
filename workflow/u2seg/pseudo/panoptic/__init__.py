"""Panoptic pseudo-labels (spec 6): the thing/stuff merge, its sharded form, concatenation and validation."""

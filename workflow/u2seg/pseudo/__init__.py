"""Pseudo-labels (docs/method.md §4-§6): instance embeddings, instance and stuff clustering, panoptic merge."""

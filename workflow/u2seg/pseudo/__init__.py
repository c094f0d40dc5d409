"""Pseudo-labels (spec sections 4-6): instance embeddings, instance and stuff clustering, panoptic merge."""

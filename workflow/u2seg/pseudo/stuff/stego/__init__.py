"""The STEGO stuff model (docs/method.md §5): head + cluster probe, its loss, training, checkpoints and stage."""

"""The STEGO stuff model (spec 5): head + cluster probe, its loss, training, checkpoints and stage."""

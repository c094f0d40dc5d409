"""Segment your own photos: named models (:mod:`.models`), the Python API (:mod:`.api`), overlays
(:mod:`.draw`) and the ``u2seg segment`` / ``u2seg info`` stages. Importing this package loads no torch."""

"""Pseudo-labels (docs/method.md §4-§6).

* :mod:`u2seg.pseudo.instances`: per-mask embeddings of the MaskCut masks (``u2seg embed``) and their
  k-means clusters (``u2seg cluster-instances``);
* :mod:`u2seg.pseudo.stuff`: the stuff models (``registry``: k-means in ``model``, STEGO in ``stuff.stego``)
  and the stuff label maps (``u2seg cluster-stuff``, ``u2seg stego``);
* :mod:`u2seg.pseudo.panoptic`: the thing/stuff merge (per dataset or per shard), the concatenation of the
  shards and the format checks;
* shared: :mod:`u2seg.pseudo.kmeans` (streaming k-means of instances and stuff), :mod:`u2seg.pseudo.io`.

Every ``*_cli``/``cli`` module is flags + one call into its library module; only :mod:`u2seg.cli` imports them.
"""

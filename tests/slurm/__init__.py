"""Helpers of tests/test_slurm.py: a throw-away one-node Slurm cluster (cluster.py)."""

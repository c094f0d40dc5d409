"""u2seg.detector.launch: how the train rule starts 1, G or G x N processes and what it asks Slurm for."""
from __future__ import annotations

import subprocess

import pytest

from u2seg.detector.launch import check_batch, launch_prefix, slurm_resources
from u2seg.errors import UserError


def test_single_process_is_the_plain_cli():
    assert launch_prefix("py", 1, 1) == "py -m u2seg"
    assert slurm_resources(1, 1, "cuda", 4) == {"gpu": 1, "cpus_per_gpu": 4}
    assert slurm_resources(1, 1, "auto", 4) == {"gpu": 0}  # auto asks for no GPU (as every other rule)


def test_cpu_processes_on_several_nodes_ask_for_cpus_per_task():
    res = slurm_resources(2, 3, "cpu", 4)
    assert res["nodes"] == res["tasks"] == 3 and res["cpus_per_task"] == 8 and "gres" not in res


def test_batch_must_split_over_the_processes():
    check_batch(16, 8, 1)
    check_batch(32, 8, 2)
    with pytest.raises(UserError, match="train.batch_size=16 does not split over .* = 24 processes"):
        check_batch(16, 8, 3)
    with pytest.raises(UserError, match=">= 1"):
        launch_prefix("py", 0, 1)


def test_multi_node_launch_refuses_to_run_outside_slurm(tmp_path):
    cmd = launch_prefix("true", 2, 2).replace("srun ", "echo srun ", 1)
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and "train.nodes > 1 needs a Slurm job" in proc.stderr
    # inside a job: the rendezvous is the first host of the job's node list (a stand-in scontrol here)
    fake = tmp_path / "scontrol"
    fake.write_text('#!/bin/sh\necho node7; echo node8\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node[7-8]"}
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("srun --nodes 2 --ntasks 2 --ntasks-per-node 1")
    assert "--nproc-per-node 2 --nnodes 2 --rdzv-backend c10d --rdzv-endpoint node7:29500 --rdzv-id 42 -m u2seg" \
        in proc.stdout

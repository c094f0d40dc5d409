"""How the `train_round` rule starts training: one process, torchrun on one machine, or srun + torchrun.

``train.gpus`` processes per node (one per GPU; on CPU, gloo processes) times ``train.nodes`` nodes:
  * 1 x 1: ``python -m u2seg train ...``;
  * G x 1: ``python -m torch.distributed.run --standalone --nproc-per-node G -m u2seg train ...``
    (on Slurm inside the one-task step the executor plugin starts; the job holds the G GPUs);
  * G x N (N > 1, Slurm only): ``srun`` starts one torchrun per node, which rendezvous (c10d) at the
    job's first node; the job asks for N nodes, one task each (resource ``mpi``: the plugin does not
    wrap the command in its own ``srun -n1``).
The global batch ``train.batch_size`` is split over the G x N processes (``u2seg train`` checks that
it divides).
"""
from __future__ import annotations

from typing import Any

from u2seg.errors import UserError


def world_size(gpus: int, nodes: int) -> int:
    """Training processes in all."""
    if gpus < 1 or nodes < 1:
        raise UserError(f"train.gpus and train.nodes must be >= 1, got gpus={gpus}, nodes={nodes}")
    return gpus * nodes


def check_batch(batch_size: int, gpus: int, nodes: int) -> None:
    """The global batch must split evenly over the processes (checked before any job runs)."""
    world = world_size(gpus, nodes)
    if batch_size % world:
        raise UserError(f"train.batch_size={batch_size} does not split over train.gpus x train.nodes = {world} "
                        f"processes; make it a multiple of {world}")


def launch_prefix(python: str, gpus: int, nodes: int, port: int = 29500) -> str:
    """Shell words that start ``-m u2seg train`` (to be followed by the stage and its flags).

    ``python`` is the interpreter (already shell-quoted); the result ends with ``-m u2seg``.
    """
    world_size(gpus, nodes)
    if gpus == 1 and nodes == 1:
        return f"{python} -m u2seg"
    run = f"{python} -m torch.distributed.run --nproc-per-node {gpus}"
    if nodes == 1:
        return f"{run} --standalone --nnodes 1 -m u2seg"
    head = '"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'
    return ('{ test -n "${SLURM_JOB_ID:-}" || { echo "train.nodes > 1 needs a Slurm job '
            '(snakemake --profile profiles/slurm)" >&2; exit 1; }; } && '
            f"srun --nodes {nodes} --ntasks {nodes} --ntasks-per-node 1 --kill-on-bad-exit=1 "
            f"{run} --nnodes {nodes} --rdzv-backend c10d --rdzv-endpoint {head}:{int(port)} "
            '--rdzv-id "$SLURM_JOB_ID" -m u2seg')


def slurm_resources(gpus: int, nodes: int, device: str, threads: int) -> dict[str, Any]:
    """Scheduler resources of a training job (snakemake-executor-plugin-slurm names).

    ``gpu`` (-> ``--gpus``) only for an explicit ``device: cuda``; CPUs per GPU = ``threads`` (the
    torch threads of each process). Multi-node: ``nodes``, ``gres=gpu:G`` per node, one task per node.
    """
    world_size(gpus, nodes)
    out: dict[str, Any] = {}
    cuda = device == "cuda"
    if nodes == 1:
        out["gpu"] = gpus if cuda else 0
        if cuda:
            out["cpus_per_gpu"] = threads
        return out
    out.update({"nodes": nodes, "tasks": nodes, "tasks_per_gpu": 0, "mpi": "srun", "gpu": 0})
    if cuda:
        out["gres"] = f"gpu:{gpus}"
        out["cpus_per_gpu"] = threads
    else:
        out["cpus_per_task"] = threads * gpus
    return out

"""The pipeline on a real Slurm cluster, through `snakemake --profile profiles/slurm`.

Starts a one-node cluster on this machine (tests/slurm/cluster.py: slurmctld + slurmd + a private
munged, as root, config in a temporary folder, no accounting), installing Debian's slurm-wlm and
munge with apt when they are missing. Runs `pseudo_labels` on the bundled samples through the slurm
executor plugin (job states from `squeue`), checks that every compute job went through sbatch and
ran on the node, and that the outputs equal those of a local run of the same target and config.

Skipped only when Slurm is absent and we are not root (apt needs root). In CI (root) it really runs;
a failed installation or cluster start fails the test with apt's or the daemons' output.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.snakemake_runner import run_snakemake, snakemake_cmd
from tests.slurm.cluster import SlurmCluster, ensure_installed, missing_commands

pytestmark = pytest.mark.slow

TARGET = "pseudo_labels"
# Small but real settings, the same for both runs: the default backbone (random_vit_tiny's random
# features would make meaningless pseudo-labels) at 224 px, CPU everywhere (the test cluster has no
# GPU), and two feature shards of 4 images so that per-shard jobs can be packed (docs/slurm.md: groups).
CONFIG = {
    "features": {"input_size": 224, "device": "cpu", "shard_size": 4},
    "maskcut": {"device": "cpu"},
}
# Pack each shard's features -> MaskCut -> embedding chain into group `shards`, both shards' chains
# into one sbatch job; --cores = the node's cores, so the group's jobs run one after the other in
# a 2-CPU allocation (without it the group would ask for 4 CPUs and never start on this node).
GROUPS = ["--groups", "features_shard=shards", "maskcut=shards", "embed=shards",
          "--group-components", "shards=2", "--cores", "2"]


# ---------------------------------------------------------------------------- profile composition
def _parsed(*argv: str):
    """The arguments Snakemake would run with (profiles applied), as parsed from the repository root."""
    from snakemake.cli import parse_args

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return parse_args(list(argv))[1]
    finally:
        os.chdir(cwd)


def test_profiles_compose():
    """Local runs get profiles/default (one GPU job at a time); the Slurm profile, used as docs/slurm.md
    says, gets none of it and submits through the slurm executor with its own settings."""
    local = _parsed("-n")
    assert local.executor in (None, "local")
    assert {k: v.value for k, v in local.resources.items()} == {"gpu": 1}

    slurm = _parsed("--profile", "profiles/slurm", "--workflow-profile", "none", "-n")
    assert slurm.executor == "slurm"
    assert "gpu" not in (slurm.resources or {}), "the local GPU cap must not throttle cluster jobs"
    assert slurm.latency_wait == 60 and slurm.retries == 2 and slurm.rerun_incomplete
    assert slurm.jobs == 100
    assert {"mem_mb", "runtime"} <= set(slurm.default_resources)


# ---------------------------------------------------------------------------- multi-process training job
class _Resources(dict):
    """A job's resources as the executor plugin reads them (``.get`` and attributes)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def _train_job_dry_run(tmp_path: Path, gpus: int, nodes: int) -> tuple[_Resources, int, str]:
    """(resources, threads, shell command) of the train_round job in a Slurm-profile dry run."""
    from tests.detector.synth import stage_ingested

    stage_ingested(tmp_path)
    proc = run_snakemake(tmp_path, ["-n", "train"], cores=None, timeout=600, extra=[
        "--profile", str(REPO / "profiles" / "slurm"), "--workflow-profile", "none",
        "--config", f"train={{gpus: {gpus}, nodes: {nodes}, device: cuda, threads: 3, "
                    f"batch_size: {2 * gpus * nodes}}}"])
    block = proc.stdout[proc.stdout.index("rule train_round:"):]
    block = block[:block.index("\n\n")]
    line = re.search(r"^\s*resources: (.*)$", block, flags=re.M).group(1)
    resources = _Resources()
    for item in line.split(", "):
        key, value = item.split("=", 1)
        resources[key] = int(value) if value.isdigit() else value
    threads = int(re.search(r"^\s*threads: (\d+)$", block, flags=re.M).group(1)) if "threads:" in block else 1
    shell = re.search(r"^Shell command: (.*)$", proc.stdout[proc.stdout.index("rule train_round:"):],
                      flags=re.M).group(1)
    return resources, threads, shell


def _submit(resources: _Resources, threads: int) -> tuple[str, str]:
    """(sbatch command, the in-job srun wrapper or '' for mpi jobs) the slurm plugins build for the job."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm_jobstep import get_cpu_setting, get_gpu_setting, get_node_setting

    job = SimpleNamespace(resources=resources, threads=threads)
    params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "rule_train_round", "account": "",
              "partition": "", "workdir": ""}
    sbatch = get_submit_command(job, params) + set_gres_string(job)
    step = "" if "mpi" in resources else \
        f"srun -n1 {get_cpu_setting(job, True)} {get_gpu_setting(job)} {get_node_setting(job)}"
    return sbatch, step


def test_multi_gpu_training_job_on_one_node(tmp_path):
    """train.gpus = 4: sbatch asks for 4 GPUs and 3 CPUs per GPU; torchrun starts 4 processes."""
    resources, threads, shell = _train_job_dry_run(tmp_path, gpus=4, nodes=1)
    sbatch, step = _submit(resources, threads)
    assert "--gpus=4" in sbatch and "--cpus-per-gpu=3" in sbatch and "--nodes" not in sbatch, sbatch
    assert "--gpus=4" in step and "--cpus-per-gpu=3" in step and "--nodes=1" in step, step
    assert re.search(r"-m torch\.distributed\.run --nproc-per-node 4 --standalone --nnodes 1 -m u2seg train ", shell)
    assert "--batch-size 8" in shell and "--threads 3" in shell and "--device cuda" in shell


def test_multi_node_training_job(tmp_path):
    """train.nodes = 2, gpus = 4: one sbatch job of 2 nodes x 4 GPUs, one task per node, srun + torchrun."""
    resources, threads, shell = _train_job_dry_run(tmp_path, gpus=4, nodes=2)
    sbatch, step = _submit(resources, threads)
    for flag in ("--nodes=2", "--ntasks=2", "--gres=gpu:4", "--cpus-per-gpu=3"):
        assert flag in sbatch, (flag, sbatch)
    assert "--ntasks-per-gpu" not in sbatch and "--gpus=" not in sbatch, sbatch
    assert step == "", "mpi-style job: the plugin must not wrap the command in its own srun -n1"
    assert "srun --nodes 2 --ntasks 2 --ntasks-per-node 1" in shell
    assert "-m torch.distributed.run --nproc-per-node 4 --nnodes 2 --rdzv-backend c10d" in shell
    assert '--rdzv-id "$SLURM_JOB_ID" -m u2seg train ' in shell and "--batch-size 16" in shell


# ---------------------------------------------------------------------------- the cluster run
@pytest.fixture(scope="module")
def cluster():
    missing = missing_commands()
    if missing and os.geteuid() != 0:
        pytest.skip(f"Slurm/munge commands {missing} are missing and apt-get needs root to install "
                    "slurm-wlm and munge")
    t0 = time.monotonic()
    installed = ensure_installed()  # raises SlurmUnavailable (a test error) with apt's output
    if installed:
        print(f"installed slurm-wlm + munge (missing: {installed}) in {time.monotonic() - t0:.0f}s")
    c = SlurmCluster()
    with c:
        yield c
    assert c.running() == [], f"daemons still running after stop(): {c.running()}"
    assert not c.root.exists(), f"temporary cluster folder left behind: {c.root}"


def _executed(log: str) -> Counter:
    """Jobs a Snakemake process executed itself, by rule (`localrule X:` / `localcheckpoint X:`)."""
    return Counter(re.findall(r"^local(?:rule|checkpoint) (\w+):", log, flags=re.M))


def _drop_timings(obj):
    """JSON without the wall-clock fields (keys starting with "seconds"), which no two runs share."""
    if isinstance(obj, dict):
        return {k: _drop_timings(v) for k, v in obj.items() if not k.startswith("seconds")}
    if isinstance(obj, list):
        return [_drop_timings(v) for v in obj]
    return obj


def _without_timings(path: Path):
    """Content of a json / npz file minus its timing fields (npz: arrays, json strings parsed)."""
    if path.suffix == ".json":
        return _drop_timings(json.loads(path.read_text()))
    import numpy as np

    with np.load(path) as z:
        out = {}
        for k in z.files:
            a = z[k]
            if a.dtype.kind == "U" and a.ndim == 0:
                try:
                    out[k] = _drop_timings(json.loads(str(a)))
                    continue
                except ValueError:
                    pass
            out[k] = (a.dtype.str, a.shape, a.tobytes())
        return out


def _assert_same_tree(a: Path, b: Path, what: str) -> tuple[int, list[str]]:
    """Every file under ``a`` and ``b``: the same names, the same bytes; json/npz files may differ only
    in timing fields. Returns (number of files, names that differed only in timings)."""
    fa = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    fb = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert fa == fb, f"{what}: different files: {sorted(set(fa) ^ set(fb))}"
    timing_only, differ = [], []
    for rel in fa:
        if (a / rel).read_bytes() == (b / rel).read_bytes():
            continue
        if Path(rel).suffix in (".json", ".npz") and _without_timings(a / rel) == _without_timings(b / rel):
            timing_only.append(rel)
        else:
            differ.append(rel)
    assert not differ, f"{what}: files differ between the Slurm and the local run: {differ}"
    return len(fa), timing_only


def test_pipeline_on_slurm_equals_local(tmp_path, cluster):
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"

    # The local run (default workflow profile, 2 cores) runs beside the Slurm run: most of the
    # Slurm run's time is spent waiting between status checks.
    local: dict = {}

    def _local():
        try:
            local["proc"] = run_snakemake(local_dir, [TARGET], CONFIG, check=False)
        except BaseException as e:  # pragma: no cover - reported below
            local["error"] = e

    t0 = time.monotonic()
    thread = threading.Thread(target=_local)
    thread.start()

    slurm_dir.mkdir()
    # The same config as the local run, through the same runner (--cores comes with GROUPS).
    cmd = snakemake_cmd(slurm_dir, [TARGET], CONFIG, cores=None, extra=[
        "--profile", str(REPO / "profiles" / "slurm"), "--workflow-profile", "none",
        # No accounting on the test cluster: job states from squeue (MinJobAge=600 there), and
        # a first status check after 1 s instead of 40 s.
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1", *GROUPS])
    try:
        proc = subprocess.run(cmd, env=cluster.env(), capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:  # e.g. a job pending forever: say why
        queue = cluster.run("squeue", "--states=all", "--format=%i|%T|%r|%C|%m|%k", check=False).stdout
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        raise AssertionError(f"Slurm run timed out after 900s\n{queue}\n{out[-4000:]}\n{cluster.logs()}") from e
    slurm_seconds = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"Slurm run failed ({proc.returncode}):\n{log[-6000:]}\n{cluster.logs()}"

    thread.join(timeout=900)
    assert not thread.is_alive(), "the local run did not finish"
    assert "error" not in local, local.get("error")
    lp = local["proc"]
    assert lp.returncode == 0, f"local run failed:\n{lp.stdout[-3000:]}\n{lp.stderr[-5000:]}"
    print(f"Slurm run {slurm_seconds:.0f}s, both runs {time.monotonic() - t0:.0f}s")

    # -- every compute job went through sbatch and ran on the node
    run_id = re.search(r"SLURM run ID: (\S+)", log)
    assert run_id, log[-3000:]
    # "Job <snakemake id | group uuid> has been submitted with SLURM jobid <id> (log: <path>)."
    submitted = re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.", log)
    assert submitted, f"no job was submitted with sbatch:\n{log[-4000:]}"
    slurm_ids = [jid for _, jid, _ in submitted]
    queue = cluster.run("squeue", "--states=all", "--noheader", "--name", run_id.group(1),
                        "--format=%i|%T|%k").stdout.split()
    states = {jid: (state, comment) for jid, state, comment in (row.split("|", 2) for row in queue)}
    assert sorted(states) == sorted(slurm_ids), (states, submitted)
    # Failed attempts (the profile retries twice) would show up here too: none may fail on samples.
    assert all(state == "COMPLETED" for state, _ in states.values()), states
    assert any(c.startswith("rule_shards_") for _, c in states.values()), f"no group job: {states}"

    ctld = cluster.ctld_log.read_text(errors="replace")
    slurmd = cluster.slurmd_log.read_text(errors="replace")
    for jid in slurm_ids:
        assert re.search(rf"_slurm_rpc_submit_batch_job: JobId={jid}\b", ctld), f"job {jid} not in slurmctld log"
        assert re.search(rf"[Ll]aunching batch job {jid}\b", slurmd), f"job {jid} not launched by slurmd"

    # Inside each Slurm job, `srun` runs Snakemake on the job's rule(s); their logs (kept: profile
    # slurm-keep-successful-logs) name every job they executed. Together: exactly the jobs of the
    # local run, while the login-node Snakemake executed none but the target (no shell, nothing to run).
    on_slurm = sum((_executed(Path(path).read_text(errors="replace")) for _, _, path in submitted), Counter())
    local_jobs = _executed(lp.stdout + lp.stderr)
    assert local_jobs[TARGET] == 1 and local_jobs["features_shard"] == 2, local_jobs
    del local_jobs[TARGET]
    assert on_slurm == local_jobs, f"jobs run in Slurm jobs {dict(on_slurm)} != local run {dict(local_jobs)}"
    assert _executed(log) == Counter({TARGET: 1}), f"the login node ran jobs itself: {_executed(log)}"

    # -- outputs equal a local run's
    lr, sr = local_dir / "results" / "samples", slurm_dir / "results" / "samples"
    # The manifest names the results folder (absolute paths): equal once that is factored out.
    manifests = [json.loads((r / "manifest.json").read_text().replace(str(r.parent), "<results>"))
                 for r in (lr, sr)]
    assert manifests[0] == manifests[1]
    assert len(manifests[0]["images"]) == 8
    assert (lr / "skipped.json").read_bytes() == (sr / "skipped.json").read_bytes()
    _assert_same_tree(lr / "images", sr / "images", "ingested sample images")
    _assert_same_tree(lr / "features", sr / "features", "feature shards")
    _assert_same_tree(lr / "maskcut", sr / "maskcut", "MaskCut masks")
    n_pseudo, _ = _assert_same_tree(lr / "pseudo", sr / "pseudo", "pseudo-labels")
    # The labels themselves byte for byte (not only modulo timings).
    pngs = sorted(p.relative_to(lr) for p in (lr / "pseudo").rglob("*.png"))
    assert len(pngs) >= 2 * 8, pngs  # a panoptic and a semantic PNG per image, at least
    for rel in [*pngs, Path("pseudo/instances.json"), Path("pseudo/panoptic.json"), Path("pseudo/centroids.npy")]:
        assert (lr / rel).read_bytes() == (sr / rel).read_bytes(), f"{rel} differs"

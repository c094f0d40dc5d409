"""A throw-away one-node Slurm cluster on this machine, for tests.

Everything lives in one temporary folder: slurm.conf, a private munged (own socket, copy of the
key), controller state, slurmd spool and the daemons' logs. Clients (sbatch, squeue, scancel,
sinfo, scontrol; also the ones Snakemake's slurm executor plugin calls) find the cluster through
``SLURM_CONF`` in :meth:`SlurmCluster.env`. No accounting database: job states come from
``squeue`` (completed jobs stay visible for ``MinJobAge`` seconds).

Only the processes started here are stopped here (by their pid), never anything else.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# Debian packages that provide the daemons and the client commands.
APT_PACKAGES = ["slurm-wlm", "munge"]
REQUIRED_COMMANDS = ["slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "scontrol", "srun",
                     "munged", "munge"]


class SlurmUnavailable(RuntimeError):
    """Slurm or munge is missing and could not be installed."""


def missing_commands() -> list[str]:
    return [c for c in REQUIRED_COMMANDS if shutil.which(c) is None
            and not Path("/usr/sbin", c).exists()]


def _which(cmd: str) -> str:
    path = shutil.which(cmd) or (str(Path("/usr/sbin", cmd)) if Path("/usr/sbin", cmd).exists() else None)
    if path is None:
        raise SlurmUnavailable(f"{cmd} not found")
    return path


def ensure_installed(timeout: float = 900) -> list[str]:
    """Install Debian's slurm-wlm and munge with apt when a command is missing (needs root).

    Returns the commands that were missing before (empty when nothing had to be installed).
    Raises :class:`SlurmUnavailable` with apt's output when installation fails.
    """
    missing = missing_commands()
    if not missing:
        return []
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"missing {missing} and not root, so apt-get cannot install {APT_PACKAGES}")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"missing {missing} and there is no apt-get to install {APT_PACKAGES}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                   f"{proc.stderr[-3000:]}")
    still = missing_commands()
    if still:
        raise SlurmUnavailable(f"apt-get installed {APT_PACKAGES} but {still} are still missing")
    return missing


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) as slurmd detects them (``slurmd -C``)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=60).stdout
    cpus = re.search(r"\bCPUs=(\d+)", out)
    mem = re.search(r"\bRealMemory=(\d+)", out)
    if not cpus or not mem:
        raise SlurmUnavailable(f"cannot read the node's hardware from `slurmd -C`: {out!r}")
    return int(cpus.group(1)), int(mem.group(1))


class SlurmCluster:
    """Start munged, slurmctld and slurmd (as root, in the foreground) on a temporary config.

    Use as a context manager; :meth:`stop` cancels the cluster's remaining jobs and stops (and
    waits for) every daemon it started.
    """

    def __init__(self, root: Path | None = None, partition: str = "debug", keep: bool = False):
        # A short path (the munge socket path must fit in 108 bytes). mkdtemp is 0700 and munged
        # needs every folder of its socket path searchable by everyone.
        self._own_root = root is None
        self.keep = keep
        self.root = Path(root or tempfile.mkdtemp(prefix="u2seg-slurm-"))
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge.sock"
        self.ctld_log = self.root / "slurmctld.log"
        self.slurmd_log = self.root / "slurmd.log"
        self._procs: dict[str, subprocess.Popen] = {}
        # Every daemon ever started here (name, Popen), to check after stop() that none is left.
        self.started: list[tuple[str, subprocess.Popen]] = []

    # ------------------------------------------------------------------ config
    def env(self, base: dict | None = None) -> dict:
        """Environment for client commands (and for Snakemake, which calls them)."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        # Clients (sbatch, squeue, srun) authenticate through our munged (AuthInfo in slurm.conf).
        for key in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
            del env[key]
        return env

    def _write_srun_shim(self) -> None:
        """``bin/srun`` = the real srun with our SLURM_CONF.

        Inside a job, the plugin's slurm-jobstep executor starts each rule with ``srun`` after deleting
        every inherited SLURM_* variable but the job's identity, SLURM_CONF included. A real cluster's
        srun then finds /etc/slurm/slurm.conf (or its configless copy); this test cluster keeps its
        config in a temporary folder, so srun is reached through this shim (PATH goes to the jobs via
        sbatch --export=ALL).
        """
        shim = self.root / "bin" / "srun"
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f"#!/bin/sh\nSLURM_CONF='{self.conf}' exec '{_which('srun')}' \"$@\"\n")
        shim.chmod(0o755)

    def write_config(self) -> None:
        self._write_srun_shim()
        cpus, mem = _node_hardware()
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(exist_ok=True)
        ctld_port, slurmd_port = _free_port(), _free_port()
        while slurmd_port == ctld_port:
            slurmd_port = _free_port()
        self.conf.write_text("\n".join([
            "# One-node test cluster (tests/slurm/cluster.py): no cgroups, no accounting.",
            "ClusterName=u2segtest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.ctld_log}",
            f"SlurmdLogFile={self.slurmd_log}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            # Finished jobs stay visible to squeue this long (the plugin's squeue status mode needs
            # it, and the test reads every job's final state at the end).
            "MinJobAge=3600",
            "ReturnToService=2",
            "SlurmdTimeout=300",
            "InactiveLimit=0",
            "KillWait=5",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    # ------------------------------------------------------------------ daemons
    def _start(self, name: str, cmd: list[str]) -> None:
        out = open(self.root / f"{name}.out", "w")
        self._procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                             start_new_session=True)
        self.started.append((name, self._procs[name]))
        out.close()

    def _wait_for(self, what: str, check, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                           + self.logs())
            if check():
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"timed out waiting for {what}:\n" + self.logs())

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a client command (sinfo, squeue, ...) against this cluster."""
        proc = subprocess.run([_which(cmd[0]), *cmd[1:]], env=self.env(), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def start(self) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise SlurmUnavailable("the one-node test cluster needs root (slurmd runs jobs as their users)")
        self.write_config()
        key = self.root / "munge.key"
        if Path("/etc/munge/munge.key").exists():
            shutil.copyfile("/etc/munge/munge.key", key)
        else:  # any 1024 random bits will do: only our own munged reads it
            key.write_bytes(os.urandom(128))
        os.chmod(key, 0o600)
        self._start("munged", [_which("munged"), "--foreground", "--force",
                               f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--pid-file={self.root / 'munged.pid'}", f"--log-file={self.root / 'munged.log'}",
                               f"--seed-file={self.root / 'munged.seed'}"])
        self._wait_for("munged", lambda: subprocess.run(
            f"{_which('munge')} -n -S {self.munge_socket} | {_which('unmunge')} -S {self.munge_socket}",
            shell=True, capture_output=True).returncode == 0, timeout=30)
        self._start("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait_for("slurmctld", lambda: self.run("scontrol", "ping", check=False).stdout.count("UP") > 0)
        self._start("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait_for("the node to become idle", lambda: "idle" in self.run(
            "sinfo", "-h", "-N", "-o", "%T", check=False).stdout, timeout=90)
        return self

    def logs(self) -> str:
        parts = []
        for path in sorted(self.root.glob("*.out")) + [self.ctld_log, self.slurmd_log]:
            if path.exists():
                parts.append(f"---- {path.name} (tail)\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel the cluster's jobs, then stop slurmd, slurmctld and munged (those started here)."""
        if self._procs.get("slurmctld") and self._procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "-u", "root", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run(
                    "squeue", "-h", "-t", "PD,R,CG", check=False).stdout.strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        if self._own_root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def running(self) -> list[str]:
        """Names of the daemons started here that are still alive."""
        return [name for name, proc in self.started if proc.poll() is None]

    def __enter__(self) -> "SlurmCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

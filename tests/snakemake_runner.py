"""The one way the tests start Snakemake: the repository's Snakefile in a working directory of its own.

Every config value travels in one YAML config file (never ``--config k=v``), so arbitrary strings
(spaces, quotes, ``$``, ``;``) arrive unchanged and nested sections merge recursively into config.yaml.
Tests that call these functions are marked ``snakemake`` automatically (tests/snakemake_marking.py).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
# The config file the runner writes into the working directory.
CONFIG_FILE = "test-config.yaml"


def snakemake_cmd(workdir: Path, targets: Sequence[str], config: dict[str, Any] | None = None,
                  extra: Sequence[str] | None = None, *, configfiles: Sequence[Path] = (),
                  snakefile: Path = SNAKEFILE, cores: int | None = 2, write_config: bool = True) -> list[str]:
    """The command running ``snakefile`` in ``workdir`` (created) with ``config`` as one YAML file.

    For the repository's Snakefile ``results`` defaults to ``<workdir>/results``. ``configfiles`` come
    before the written config (later files win); Snakemake keeps only the last ``--configfile`` option,
    so ``extra`` must not carry one. ``cores=None`` leaves the core count to a profile;
    ``write_config=False`` runs the plain command a user would type (no config file, no ``results``).
    """
    extra = list(extra or [])
    if "--configfile" in extra or "--configfiles" in extra:
        raise ValueError("pass config files as configfiles=[...]: Snakemake keeps only the last --configfile")
    workdir.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {"results": str(workdir / "results")} if snakefile == SNAKEFILE else {}
    cfg.update(config or {})
    if not write_config:
        if config:
            raise ValueError("write_config=False runs without a config: pass no config")
        cfg = {}
    files = [str(p) for p in configfiles]
    if cfg:
        path = workdir / CONFIG_FILE
        path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        files.append(str(path))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir)]
    if cores is not None:
        cmd += ["--cores", str(cores)]
    cmd += [*targets, *extra]
    return cmd + (["--configfile", *files] if files else [])


def run_snakemake(workdir: Path, targets: Sequence[str], config: dict[str, Any] | None = None,
                  extra: Sequence[str] | None = None, check: bool = True, timeout: float = 1800, *,
                  configfiles: Sequence[Path] = (), snakefile: Path = SNAKEFILE, cores: int | None = 2,
                  write_config: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run Snakemake to completion (cwd = ``workdir``); with ``check``, AssertionError with the output tail."""
    cmd = snakemake_cmd(workdir, targets, config, extra, configfiles=configfiles, snakefile=snakefile, cores=cores,
                        write_config=write_config)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def run_snakemake_and_kill(workdir: Path, targets: Sequence[str], config: dict[str, Any] | None,
                           when: Callable[[], bool], extra: Sequence[str] | None = None, *,
                           snakefile: Path = SNAKEFILE, timeout: float = 600,
                           poll: float = 0.05) -> tuple[str, float]:
    """Start Snakemake in its own session, SIGKILL the whole process group once ``when()`` holds.

    Returns (Snakemake's output so far, seconds until the kill). Fails if the run ends first or the
    kill point is not reached within ``timeout`` seconds.
    """
    cmd = snakemake_cmd(workdir, targets, config, extra, snakefile=snakefile)
    log_path = workdir / "killed-run.txt"
    t0 = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while not when():
                if proc.poll() is not None:
                    raise AssertionError("the run finished before the kill point:\n" + log_path.read_text()[-4000:])
                if time.monotonic() - t0 > timeout:
                    raise AssertionError("kill point not reached in time:\n" + log_path.read_text()[-4000:])
                time.sleep(poll)
            elapsed = time.monotonic() - t0
            os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and every job it started
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _wait_group_gone(proc.pid)
    return log_path.read_text(), elapsed


def _wait_group_gone(pgid: int, timeout: float = 10) -> None:
    """Wait until no process of group ``pgid`` is left (killed jobs may take a moment to be reaped)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {pgid} survived SIGKILL")

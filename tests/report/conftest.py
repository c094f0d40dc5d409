"""Fixtures of the report tests: a headless Chromium (installed from Debian when missing)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.report.cdp import find_chromium

INSTALL_HINT = ("the report test opens the HTML report in headless Chromium: install Debian's `chromium` "
                "(as root: apt-get update && apt-get install -y chromium)")


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    """Path of a Chromium binary; installs Debian's `chromium` once per session when missing (root only)."""
    path = find_chromium()
    if path is not None:
        return path
    if not shutil.which("apt-get"):
        pytest.fail(f"no Chromium and no apt-get on this machine; {INSTALL_HINT}")
    if os.geteuid() != 0:
        pytest.fail(f"no Chromium, and not root so it cannot be installed here; {INSTALL_HINT}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(cmd)}` timed out; {INSTALL_HINT}")
        if proc.returncode != 0:
            pytest.fail(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr[-2000:]}\n{INSTALL_HINT}")
    path = find_chromium()
    if path is None:
        pytest.fail(f"apt-get installed chromium but no chromium binary is on PATH; {INSTALL_HINT}")
    return path

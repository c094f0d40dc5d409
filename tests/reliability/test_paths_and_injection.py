"""Paths with spaces, quotes and shell syntax work in every rule; config values never reach a shell
unquoted (no command injection through ``images_dir``, ``results``, ``weights`` or ``coco_root``)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import REPO
from tests.snakemake_runner import run_snakemake
from tests.reliability.conftest import INJECT_IMAGES, INJECT_RESULTS, PWNED


def _no_pwned(*roots: Path) -> None:
    for root in roots:
        hits = [p for p in root.rglob("pwned*") if p.name in PWNED]
        assert not hits, f"a config value was executed by a shell: {hits}"


def test_odd_paths_run_and_nothing_is_injected(odd_run):
    # the run completed (fixture) with results and images in folders named like shell code
    assert odd_run.results.name == INJECT_RESULTS and odd_run.images_dir.name == INJECT_IMAGES
    manifest = json.loads((odd_run.out / "manifest.json").read_text())
    assert manifest["root"] == str(odd_run.images_dir.resolve())
    assert (odd_run.out / "features" / "shard_00000.zarr" / "zarr.json").is_file()
    # the shell commands really contained the strings (printshellcmds), quoted
    out = odd_run.proc.stdout + odd_run.proc.stderr
    assert "$(touch pwned1)" in out and "$(touch pwned4)" in out and "$(touch pwned5)" in out
    _no_pwned(odd_run.workdir, odd_run.results.parent, Path.cwd())
    assert not any((Path(d) / n).exists() for d in ("/tmp", str(REPO)) for n in PWNED)


def test_coco_root_with_shell_syntax(tmp_path):
    # a tiny COCO root whose folder name is shell code; only the ingest checkpoint runs
    root = tmp_path / "coco 'q' $(touch pwned1) `touch pwned2`"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for i in (7, 3):
        Image.fromarray(np.full((20, 24, 3), i * 20, np.uint8)).save(root / "val2017" / f"{i:012d}.jpg")
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 24, "height": 20})
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": [], "categories": []}))
    work = tmp_path / "work"
    run_snakemake(work, [str(work / "results" / "coco-val" / "manifest.json")],
                  {"dataset": "coco", "coco_root": str(root), "evaluate": {"download": False}})
    manifest = json.loads((work / "results" / "coco-val" / "manifest.json").read_text())
    assert [im["id"] for im in manifest["images"]] == [3, 7]
    _no_pwned(tmp_path)


_SHELL_FIELD = re.compile(r"\{(input|output|log)((?:\.\w+|\[[^\]]*\])*)(:[^}]*)?\}")


def test_every_path_placeholder_in_a_shell_command_is_quoted():
    # {input}, {output} and {log} are file names under `results`: they must be formatted with :q
    # (wildcard values are constrained to safe patterns; params are covered by the runs above)
    unquoted = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for n, line in enumerate(smk.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for m in _SHELL_FIELD.finditer(line):
                if m.group(3) != ":q" and '"' in line:  # inside a (shell) string literal
                    unquoted.append(f"{smk.name}:{n}: {m.group(0)}")
    assert not unquoted, "unquoted path placeholders in shell commands:\n" + "\n".join(unquoted)

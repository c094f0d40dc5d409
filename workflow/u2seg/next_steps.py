"""What the end of a run tells the user, and the report of the run they made.

* ``record_run``: the Snakefile's ``onsuccess`` handler writes the run's validated config to
  ``{results}/last_run.yaml``, so ``snakemake --report`` can be built for that run without
  repeating its ``--config`` (``report_config``) and the printed report command can name it.
* ``summary_lines``: where the results are, what to open first, how to build the HTML report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from u2seg.atomic import write_text

LAST_RUN = "last_run.yaml"
CONFIG_FLAGS = ("--config", "-C", "--configfile", "--configfiles")


def record_run(config: dict[str, Any], path: str | Path) -> Path:
    """Write ``config`` (plain data) to ``path`` as YAML (atomically); returns the path."""
    write_text(path, "# the config of the last successful run (written by the Snakefile's onsuccess)\n"
               + yaml.safe_dump(_plain(config), sort_keys=False))
    return Path(path)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def report_config(argv: Sequence[str], results: str) -> dict[str, Any]:
    """The recorded config of the last run when ``argv`` builds a report (``--report``) without any
    config flag and ``{results}/last_run.yaml`` exists; else {}."""
    args = list(argv)
    if not any(a == "--report" or a.startswith("--report=") for a in args):
        return {}
    if any(a in CONFIG_FLAGS or a.startswith(tuple(f + "=" for f in CONFIG_FLAGS)) for a in args):
        return {}
    path = Path(results) / LAST_RUN
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def summary_lines(results: str, ds: str, rounds: int, targets: Sequence[str], last_run: str | Path) -> list[str]:
    """What to tell the user after a successful run on dataset ``ds``."""
    res = Path(results)
    model = f"{ds}-r{rounds}"
    candidates = [
        (res / "report" / ds, "report pages; build the HTML report with the command below"),
        *((p, "evaluation tables") for p in sorted((res / "eval").glob(f"{ds}/*/metrics.md"))),
        (res / ds / "predict" / model, "predictions of the trained model (instances, panoptic, semantic)"),
        (res / ds / "pseudo" / "gallery", "pseudo-label panels: image | stuff | instances | panoptic"),
        (res / ds / "maskcut" / "gallery", "MaskCut masks drawn over a sample of the images"),
        (res / ds / "skipped.json", "files that could not be read, with the reason"),
    ]
    shown = [(p, what) for p, what in candidates if p.exists()][:4]
    lines = [f"u2seg: done ({', '.join(targets) or 'default target'}). Results of dataset `{ds}` are under {res / ds}/"
             f" (logs: {res / 'logs'}/)."]
    if shown:
        lines.append("Open first:")
        lines += [f"  {p}{'/' if p.is_dir() else ''}  - {what}" for p, what in shown]
    report = f"snakemake --report {res / 'report.html'} --configfile {last_run}"
    if (res / "report" / ds).exists():
        lines.append(f"HTML report of this run: {report}")
    else:
        lines.append(f"HTML report: first make its pages (snakemake --cores 2 inspect --configfile {last_run}), "
                     f"then {report} inspect")
    return lines

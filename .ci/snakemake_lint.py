"""Run `snakemake --lint` and fail on any lint that .ci/snakemake-lint-allow.txt does not allow.

Also fails on allow-list entries that match no lint (so the list shrinks when a lint is fixed) and when
the lint run itself breaks (a Snakefile that does not parse prints no lints at all).
Usage: python .ci/snakemake_lint.py [--allow FILE]
"""
from __future__ import annotations

import argparse
import fnmatch
import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOW = Path(__file__).resolve().parent / "snakemake-lint-allow.txt"
_HEADER = re.compile(r"^Lints for (rule|snakefile) (.+?)(?: \(line \d+, .*\))?:$")
_ITEM = re.compile(r"^    \* (.+?):?$")
log = logging.getLogger("snakemake-lint")


@dataclass(frozen=True)
class Lint:
    where: str  # "rule NAME" or "snakefile PATH" (PATH relative to the repository)
    title: str  # without " in line N" and the trailing ':'


@dataclass(frozen=True)
class Allowed:
    where: str
    title: str
    reason: str
    line: int

    def allows(self, lint: Lint) -> bool:
        return fnmatch.fnmatchcase(lint.where, self.where) and fnmatch.fnmatchcase(lint.title, self.title)


def parse_lints(text: str, repo: Path = REPO) -> list[Lint]:
    """The lints of `snakemake --lint text` output: one per bullet, under its rule or snakefile."""
    lints, where = [], None
    for line in text.splitlines():
        if m := _HEADER.match(line):
            kind, name = m.groups()
            if kind == "snakefile":
                path = Path(name)
                name = path.relative_to(repo).as_posix() if path.is_absolute() and path.is_relative_to(repo) else name
            where = f"{kind} {name}"
        elif (m := _ITEM.match(line)) and where is not None:
            title = re.sub(r" in line \d+$", "", m.group(1).rstrip(":"))
            lints.append(Lint(where, title))
    return lints


def parse_allow(text: str) -> list[Allowed]:
    """Entries `<where> | <title> | <reason>`; blank lines and `#` comments are skipped; a reason is required."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" | ")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"allow-list line {n}: expected '<where> | <lint title> | <reason>': {line!r}")
        out.append(Allowed(parts[0], parts[1].rstrip(":"), parts[2], n))
    return out


def check(lints: list[Lint], allowed: list[Allowed]) -> tuple[list[Lint], list[Allowed]]:
    """(lints no entry allows, entries that allow no lint)."""
    bad = [lint for lint in lints if not any(a.allows(lint) for a in allowed)]
    unused = [a for a in allowed if not any(a.allows(lint) for lint in lints)]
    return bad, unused


def run_lint(repo: Path = REPO) -> str:
    """The text output of `snakemake --lint` on the repository's Snakefile (in a scratch directory)."""
    with tempfile.TemporaryDirectory(prefix="snakemake-lint-") as work:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "text", "-s", str(repo / "Snakefile"),
                               "--directory", work], capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0 and "Lints for " not in text:
        raise RuntimeError(f"snakemake --lint failed ({proc.returncode}) without printing lints:\n{text[-4000:]}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow", type=Path, default=ALLOW, help="allow-list file (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lints = parse_lints(run_lint())
    bad, unused = check(lints, parse_allow(args.allow.read_text()))
    for lint in bad:
        log.error("not allowed: %s: %s", lint.where, lint.title)
    for entry in unused:
        log.error("%s:%d allows no lint any more (delete it): %s | %s", args.allow, entry.line, entry.where,
                  entry.title)
    if bad or unused:
        log.error("snakemake --lint: %d lint(s) not in %s, %d stale entr(y/ies)", len(bad), args.allow, len(unused))
        return 1
    log.info("snakemake --lint: %d lint(s), all allowed by %s", len(lints), args.allow.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

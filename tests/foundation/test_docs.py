"""The documentation holds together: every "method §N" reference resolves to a section of
docs/method.md, no reference to the old out-of-repository spec remains, no comment cites a tracker
number of this project, and every relative link in README.md and docs/ points at a file (and
heading) that exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METHOD = ROOT / "docs" / "method.md"
SCANNED = ["workflow", "rules", "tests", "benchmarks", "docs", "configs", "profiles", "envs",
           "Snakefile", "Makefile", "config.yaml", "README.md", "pyproject.toml"]
TEXT_SUFFIXES = {".py", ".smk", ".yaml", ".yml", ".md", ".rst", ".sh", ".toml", ".txt", ".cfg", ""}

ANCHOR = re.compile(r'<a id="s(\d+(?:\.\d+)?)"></a>\n#{2,3} (\d+(?:\.\d+)?)[. ]')
SECTION_REF = re.compile(r"§(\d+(?:\.\d+)?)")
OLD_SPEC_REF = re.compile(r"\b[Ss]pec(?:s|'s| sections?)? \d|stego-training\.md|\bthe spec'")
TRACKER_REF = re.compile(r"\b[Ii]ssues?\s+#?\d+")
UPSTREAM = ("CutLER", "U2Seg", "STEGO", "TokenCut", "detectron2", "panopticapi", "DINO", "timm")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _text_files() -> list[Path]:
    files = []
    for name in SCANNED:
        p = ROOT / name
        paths = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for q in paths:
            if (q.suffix not in TEXT_SUFFIXES
                    or any(part == "__pycache__" or part.endswith(".egg-info") for part in q.parts)):
                continue
            try:
                files.append((q, q.read_text()))
            except UnicodeDecodeError:
                continue
    return files


def _method_sections() -> set[str]:
    text = METHOD.read_text()
    pairs = ANCHOR.findall(text)
    assert pairs, "docs/method.md has no '<a id=\"sN\"></a>' anchored sections"
    for anchor, heading in pairs:
        assert anchor == heading, f"anchor s{anchor} sits on heading {heading}"
    assert len({a for a, _ in pairs}) == len(pairs), "duplicate section anchors in docs/method.md"
    return {a for a, _ in pairs}


def test_method_sections_are_numbered_and_anchored():
    sections = _method_sections()
    # the numbering the code's references use: 0-12 and the subsections they cite
    for s in [str(n) for n in range(13)] + ["2.1", "2.2", "3.1", "3.5", "3.7", "5.1", "5.8", "7.1", "7.4",
                                             "8.1", "8.6"]:
        assert s in sections, f"docs/method.md lacks section {s}"
    headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", METHOD.read_text(), flags=re.M)
    assert sorted(headings) == sorted(sections), "every numbered heading needs its anchor"


def test_every_method_reference_resolves():
    sections = _method_sections()
    bad = []
    for path, text in _text_files():
        if path == METHOD:
            continue
        for m in SECTION_REF.finditer(text):
            if m.group(1) not in sections:
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{path.relative_to(ROOT)}:{line}: §{m.group(1)}")
    assert not bad, "references to sections docs/method.md does not have:\n" + "\n".join(bad)


def test_references_name_the_method_page():
    """A file citing method sections names docs/method.md (or links method.md) at least once."""
    bad = [str(p.relative_to(ROOT)) for p, t in _text_files()
           if p != METHOD and SECTION_REF.search(t) and "method.md" not in t]
    assert not bad, "files cite 'method §N' without naming docs/method.md: " + ", ".join(bad)


def test_no_old_spec_references():
    bad = []
    for path, text in _text_files():
        for m in OLD_SPEC_REF.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{path.relative_to(ROOT)}:{line}: {text[m.start():m.end() + 10]!r}")
    assert not bad, "references to the spec outside the repository (use 'method §N'):\n" + "\n".join(bad)


def test_no_tracker_numbers():
    """Upstream trackers are fine ("CutLER issue #74", "STEGO issues #12, #39"); this project's are not."""
    bad = []
    for path, text in _text_files():
        for m in TRACKER_REF.finditer(text):
            before = text[max(0, m.start() - 14):m.start()].split()
            if before and before[-1].strip("(,;\"'`*") in UPSTREAM:
                continue
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{path.relative_to(ROOT)}:{line}: {text[m.start():m.end()]!r}")
    assert not bad, "tracker issue numbers (say what they mean instead):\n" + "\n".join(bad)


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", md.read_text(), flags=re.M | re.S)  # no code-block comments
    found = {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}
    return found | set(re.findall(r'<a id="([^"]+)"></a>', text))


@pytest.mark.parametrize("page", ["README.md"] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
def test_relative_links_resolve(page):
    md = ROOT / page
    bad = []
    for target in MD_LINK.findall(md.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (md.parent / file_part).resolve() if file_part else md
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading or anchor '{anchor}'")
    assert not bad, f"{page}: broken links:\n" + "\n".join(bad)


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 180, "README.md is the front page; the manual lives in docs/"
    for cmd in ("make demo", "make test", "make check"):
        assert cmd in text
    for page in ("docs/stages.md", "docs/own-images.md", "docs/coco.md", "docs/gpu.md", "docs/slurm.md",
                 "docs/configuration.md", "docs/evaluation.md", "docs/method.md"):
        assert f"]({page})" in text, f"README.md does not link {page}"

"""``u2seg report evaluation``: metrics.md of the evaluated models -> one page of tables."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from u2seg.atomic import write_text
from u2seg.report.pages import esc, page


def markdown_to_html(md: str) -> str:
    """The small markdown subset of ``metrics.md``: headings, pipe tables, bullets, quotes, paragraphs."""
    def inline(text: str) -> str:
        text = esc(text)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)

    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            level = min(len(m.group(1)) + 1, 4)
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            rows = [r for r in block if not all(re.fullmatch(r":?-{2,}:?", c) for c in r)]
            if rows:
                head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
                body = "".join("<tr>" + "".join(
                    f"<td{' class=num' if re.fullmatch(r'-?[0-9.]+|–|-', c) else ''}>{inline(c)}</td>"
                    for c in r) + "</tr>" for r in rows[1:])
                out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append("<li>" + inline(re.sub(r"^\s*[-*]\s+", "", lines[i])) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line.startswith(">"):
            out.append(f"<p class='note'>{inline(line.lstrip('> '))}</p>")
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||>|\s*[-*]\s)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{inline(' '.join(para))}</p>")
    return "".join(out)


def cmd_evaluation(args: argparse.Namespace) -> int:
    """One page with every evaluated model's tables, or the reason there is none."""
    body: list[str] = []
    if not args.metrics:
        reason = args.reason or "no evaluation was run"
        body.append(f"<p class='note'>No evaluation table: {esc(reason)}</p>")
    for md_path in args.metrics or []:
        md_path = Path(md_path)
        body.append(f"<section><p class='sub'>{esc(md_path)}</p>{markdown_to_html(md_path.read_text())}</section>")
    write_text(args.out_html, page(args.title, f"{len(args.metrics or [])} evaluated model(s)", body))
    return 0

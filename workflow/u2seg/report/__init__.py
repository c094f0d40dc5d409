"""``u2seg report <item>``: what the HTML report shows of every stage.

Snakemake's report (``snakemake --report results/report.html``) embeds files that rules mark with
``report()``; the rules of ``rules/report.smk`` call these sub-commands to turn the stages' outputs
into such files, under ``{results}/report/{ds}/<stage>/``:

* ``features``     manifest + skipped.json + feature shards -> ``{results}/{ds}/ingest_summary.json``
                   (images, skipped files with reasons, per-shard backbone attrs and timings) + a page
* ``stage``        a stage's ``summary.json`` (+ extra summaries) and gallery folder -> a summary page
                   (tables, bar charts of numeric lists, gallery thumbnails) + the gallery PNGs
* ``train``        a training round's summary.json, metrics.jsonl and loss.png -> page + loss curve
* ``predictions``  a model's predictions on a fixed seeded sample of images -> side-by-side PNGs
                   ``image | predicted instances | predicted panoptic | ground truth`` (where the
                   manifest has annotations) + a summary page
* ``evaluation``   ``metrics.md`` of the evaluated models -> one page of tables (or the reason there are
                   none, e.g. a dataset without ground truth)

Modules: ``pages`` (HTML blocks), ``images`` (gallery copies, thumbnails, legends), one module per
item (``features``, ``stage``, ``train``, ``predictions``, ``evaluation``) and ``cli``.

Every page is a self-contained HTML file (inline CSS, images as data URIs) so the report can embed it.
"""
from __future__ import annotations

from u2seg.report.evaluation import markdown_to_html
from u2seg.report.predictions import seeded_sample

__all__ = ["markdown_to_html", "seeded_sample"]

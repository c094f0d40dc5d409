"""Every stage inspectable, checked in a real browser.

One small `samples` run (`inspect` target: pipeline + report items), then
`snakemake inspect --report results/report.html`; the report is opened in headless Chromium
(Debian `chromium`, `--headless --no-sandbox --disable-gpu`, DevTools protocol over a pipe), every
category and item is clicked through like a reader would, and each displayed image must have
decoded to the size of the file it came from; the HTML summary pages (shown in iframes) must have
rendered their tables and gallery thumbnails. Screenshots are saved under the test's tmp dir and a
copy at /tmp/u2seg_report_screenshot.png.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import run_snakemake
from tests.report.cdp import Chromium
from u2seg.report.images import MAX_PIXELS, MAX_SIDE

pytestmark = pytest.mark.slow

# Small and fast: 224 px features, K=4, 8 stuff clusters, 4 training iterations at 160 px.
CONFIG = {
    "dataset": "samples",
    "features": {"input_size": 224},
    "clustering": {"k": 4},
    "stuff": {"k": 8, "sample_patches": 20000},
    "train": {"max_iter": 4, "steps": [3], "warmup_iters": 1, "checkpoint_period": 4,
              "min_sizes": [160], "max_size": 224},
    "predict": {"min_size": 160, "max_size": 224},
}
CATEGORIES = {
    "1. Ingest and features": {"summary"},
    "2. MaskCut": {"summary", "gallery"},
    "3. Pseudo-labels": {"summary", "gallery"},
    "4. Training": {"summary", "loss curve"},
    "5. Predictions": {"summary", "gallery"},
    "6. Evaluation": {"tables"},
}
LEAD_SCREENSHOT = Path("/tmp/u2seg_report_screenshot.png")

# DOM helpers injected into the report page: they click the report's own links and buttons.
JS_HELPERS = r"""
(() => {
  const q = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  window.__u2 = {
    links: () => q('nav a').map(a => a.textContent.trim()).filter(t => t),
    click: (text) => {
      const a = q('nav a').find(a => a.textContent.trim() === text);
      if (!a) return false;
      a.click();
      return true;
    },
    home: () => { const a = q('nav ol li a')[0]; if (!a) return false; a.click(); return true; },
    rows: () => q('nav table tbody tr').map(tr => q('td', tr).map(td => td.textContent.trim())),
    view: (i) => {
      const tr = q('nav table tbody tr')[i];
      const a = tr && tr.querySelector('td:last-child a');
      if (!a) return false;
      a.click();
      return true;
    },
    shown: () => {
      const path = app.state.resultPath;
      const entry = path && results[path];
      const imgs = q('img').filter(i => !i.closest('nav'));
      const frames = q('iframe');
      return {
        path: path || null, kind: app.state.content,
        img: imgs.length ? {ok: !!entry && imgs[0].src === entry.data_uri, complete: imgs[0].complete,
                            w: imgs[0].naturalWidth, h: imgs[0].naturalHeight} : null,
        frame: frames.length ? {ok: !!entry && frames[0].src === entry.data_uri} : null,
      };
    },
  };
  return true;
})()
"""

FRAME_STATE = r"""
(() => {
  if (document.readyState !== 'complete') return null;
  const imgs = Array.from(document.images);
  return {title: document.title, text: document.body ? document.body.innerText : '',
          tables: document.querySelectorAll('table').length, svgs: document.querySelectorAll('svg').length,
          images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length};
})()
"""


@pytest.fixture(scope="module")
def samples_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("report_samples")
    t0 = time.perf_counter()
    run = run_snakemake(work, ["inspect"], CONFIG)
    t1 = time.perf_counter()
    html = work / "results" / "report.html"
    proc = run_snakemake(work, ["inspect"], CONFIG, extra=["--report", str(html)])
    t2 = time.perf_counter()
    assert html.is_file(), proc.stderr[-3000:]
    print(f"samples pipeline + report items: {t1 - t0:.0f} s; snakemake --report: {t2 - t1:.0f} s")
    return {"work": work, "res": work / "results", "html": html, "run": run}


def test_the_end_of_the_run_says_where_and_a_plain_report_command_works(samples_run):
    """The run ends with the results' place and the report command; `snakemake --report`
    without --config builds the report of that run (its config recorded in results/last_run.yaml)."""
    work, res = samples_run["work"], samples_run["res"]
    err = samples_run["run"].stderr
    assert f"Results of dataset `samples` are under {res / 'samples'}/" in err and "Open first:" in err
    assert f"--configfile {res / 'last_run.yaml'}" in err
    recorded = yaml.safe_load((res / "last_run.yaml").read_text())
    assert recorded["clustering"]["k"] == CONFIG["clustering"]["k"] and recorded["results"] == str(res)
    html = work / "plain-report.html"
    proc = run_snakemake(work, ["--report", str(html)], timeout=600, cores=None, write_config=False)
    assert "the report of the last run (dataset 'samples'" in proc.stderr and html.stat().st_size > 100_000


def _stems(folder: Path, suffix: str) -> list[str]:
    return sorted(p.stem for p in folder.glob(f"*{suffix}"))


def test_report_items_on_disk(samples_run):
    res = samples_run["res"]
    rep = res / "report" / "samples"
    manifest = json.loads((res / "samples" / "manifest.json").read_text())
    n = len(manifest["images"])
    assert n == 8

    # ingest + features summary (written by `u2seg report features` from the shard attrs)
    ingest = json.loads((res / "samples" / "ingest_summary.json").read_text())
    assert ingest["images"] == n and ingest["skipped"] == 0 and ingest["skipped_files"] == []
    assert ingest["features"]["shards"] == 1 and ingest["features"]["backbone"] == "efficientnet_lite2"
    assert ingest["features"]["input_size"] == 224
    assert ingest["shards"][0]["images"] == n and ingest["shards"][0]["seconds"] > 0
    assert ingest["shards"][0]["dense_shape"][0] == n

    # the stage galleries are copied in full, as JPEGs bounded in size
    for stage in ("maskcut", "pseudo"):
        names = _stems(res / "samples" / stage / "gallery", ".png")
        assert names, f"{stage} wrote no gallery"
        assert _stems(rep / stage / "gallery", ".jpg") == names
    for jpg in rep.rglob("*.jpg"):
        with Image.open(jpg) as im:
            w, h = im.size
        assert max(w, h) <= MAX_SIDE and w * h <= MAX_PIXELS * 1.1, (jpg, im.size)
    with Image.open(rep / "maskcut" / "gallery" / "retina.jpg") as im:  # 1411 x 1411 in the stage gallery
        assert im.size == (1024, 1024)

    # summary pages carry the stages' numbers
    mc = json.loads((res / "samples" / "maskcut" / "summary.json").read_text())
    page = (rep / "maskcut" / "summary.html").read_text()
    assert "masks per image (mean)" in page and f"<td class='num'>{mc['n_masks']}</td>" in page
    assert page.count("<figure><img src='data:image/jpeg;base64,") == len(_stems(rep / "maskcut" / "gallery", ".jpg"))
    ps = json.loads((res / "samples" / "pseudo" / "summary.json").read_text())
    page = (rep / "pseudo" / "summary.html").read_text()
    sizes = ps["clustering"]["cluster_sizes"]
    assert len(sizes) == 4 and ", ".join(str(s) for s in sizes) in page
    assert "validation" in page
    tr = json.loads((res / "samples" / "train" / "r1" / "summary.json").read_text())
    page = (rep / "train" / "r1" / "summary.html").read_text()
    assert tr["iterations"] == 4 and "Loss curve" in page and "data:image/png;base64," in page
    assert (rep / "train" / "r1" / "loss.png").read_bytes() == (res / "samples" / "train" / "r1" / "loss.png").read_bytes()
    page = (rep / "evaluation" / "metrics.html").read_text()
    assert "has no ground truth" in page

    # predictions: a seeded sample (the MaskCut rule: gallery_size 8 of 8 images = all), one panel
    # per image: image | instances | panoptic (no ground-truth panel: samples has none)
    pred = rep / "predict" / "samples-r1" / "gallery"
    stems = sorted(Path(im["file_name"]).stem for im in manifest["images"])
    assert _stems(pred, ".jpg") == stems
    for jpg in pred.glob("*.jpg"):
        with Image.open(jpg) as im:
            w, h = im.size
        assert 320 < h <= 370 and w > 2.5 * 320, (jpg, im.size)  # 320 px panels + the cluster legend
    assert "ground truth" in (rep / "predict" / "samples-r1" / "summary.html").read_text()


def _check_frame(browser: Chromium) -> dict:
    """State of the report's iframe (an HTML summary page): text, tables, images decoded."""
    deadline = time.monotonic() + 60
    children: list = []
    while time.monotonic() < deadline:
        tree = browser.send("Page.getFrameTree")["frameTree"]
        children = [c["frame"] for c in tree.get("childFrames", [])
                    if c["frame"]["url"].startswith("data:text/html")]
        if len(children) == 1:
            break
        time.sleep(0.2)
    assert len(children) == 1, [c["frame"]["url"][:60] for c in tree.get("childFrames", [])]
    ctx = browser.send("Page.createIsolatedWorld", {"frameId": children[0]["id"], "worldName": "u2seg-test"})
    state = None
    while time.monotonic() < deadline:
        r = browser.send("Runtime.evaluate", {"expression": FRAME_STATE, "contextId": ctx["executionContextId"],
                                               "returnByValue": True})
        state = r["result"].get("value")
        if state and state["loaded"] == state["images"]:
            return state
        time.sleep(0.2)
    raise AssertionError(f"iframe did not finish loading its images: {state}")


def test_report_in_chromium(samples_run, chromium_binary, tmp_path):
    html = samples_run["html"]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    checked_images, checked_pages = [], []
    with Chromium(chromium_binary, width=1400, height=900, timeout=180) as browser:
        browser.navigate(html.resolve().as_uri())
        browser.wait_for("typeof app !== 'undefined' && typeof categories !== 'undefined' && "
                         "document.querySelectorAll('nav a').length > 3")
        assert browser.evaluate(JS_HELPERS) is True
        cats = browser.evaluate("Object.fromEntries(Object.entries(categories).map(([c, s]) => [c, "
                                "Object.fromEntries(Object.entries(s).map(([k, v]) => [k, v.length]))]))")
        assert {c: set(s) for c, s in cats.items()} == CATEGORIES
        links = browser.evaluate("__u2.links()")
        assert all(c in links for c in CATEGORIES), links
        text = browser.evaluate("document.body.innerText")
        assert "u2seg: unsupervised universal image segmentation" in text  # docs/report/workflow.rst
        browser.screenshot(shots / "00_landing.png")

        for ci, (cat, subs) in enumerate(sorted(cats.items())):
            for sub in sorted(subs):
                # navigate like a reader: home -> category -> (subcategory) -> each item's eye button
                assert browser.evaluate("__u2.home()")
                assert browser.evaluate(f"__u2.click({json.dumps(cat)})"), f"no menu link {cat}"
                if len(subs) > 1:
                    browser.wait_for(f"__u2.links().includes({json.dumps(sub)})")
                    assert browser.evaluate(f"__u2.click({json.dumps(sub)})")
                rows = browser.wait_for(f"__u2.rows().length === {subs[sub]} && __u2.rows()")
                for i in range(len(rows)):
                    before = browser.evaluate("app.state.resultPath || null")
                    assert browser.evaluate(f"__u2.view({i})")
                    shown = browser.wait_for(
                        f"(() => {{ const s = __u2.shown(); return s.path && s.path !== {json.dumps(before)} && "
                        "((s.img && s.img.ok && s.img.complete) || (s.frame && s.frame.ok)) ? s : null; })()")
                    path = Path(shown["path"])
                    if path.suffix in (".png", ".jpg"):
                        with Image.open(path) as im:
                            size = im.size
                        assert (shown["img"]["w"], shown["img"]["h"]) == size, (path, shown)
                        checked_images.append(str(path))
                    else:
                        assert path.suffix == ".html" and shown["kind"] == "html", shown
                        state = _check_frame(browser)
                        if "evaluation" in path.parts:  # samples has no ground truth: the page says so
                            assert "has no ground truth" in state["text"], state
                        else:
                            assert state["tables"] >= 1 and len(state["text"]) > 200, (path, state)
                        if path.parent.name in ("maskcut", "pseudo") or "predict" in path.parts:
                            gallery = path.parent / "gallery"
                            assert state["loaded"] >= len(list(gallery.glob("*.jpg"))) > 0, (path, state)
                        if "train" in path.parts:
                            assert state["loaded"] >= 1  # the loss curve
                        checked_pages.append((str(path), state["loaded"]))
                    if i == 0:
                        slug = f"{ci + 1}_{sub.replace(' ', '_')}"
                        browser.screenshot(shots / f"{slug}.png")
        errors = browser.exceptions()
        assert not errors, errors

    # every report item was displayed: 8+8+8 gallery JPEGs + the loss curve; 6 summary pages
    assert len(checked_images) == 8 + 8 + 8 + 1, checked_images
    assert len(checked_pages) == 6, checked_pages
    # the screenshots are real renderings (not blank pages)
    for png in sorted(shots.glob("*.png")):
        arr = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
        assert arr.shape == (900, 1400, 3) and arr.std() > 20, (png, arr.std())
    lead = shots / "3_summary.png"  # the pseudo-label summary page: tables + gallery thumbnails
    try:
        shutil.copyfile(lead, LEAD_SCREENSHOT)
        shutil.copytree(shots, LEAD_SCREENSHOT.with_suffix(""), dirs_exist_ok=True)
    except OSError:
        pass
    print(f"screenshots: {shots}; {len(checked_images)} images and {len(checked_pages)} pages rendered")

"""COCO download: offline error, nothing fetched when present, extraction from (fake) archives."""
from __future__ import annotations

import io
import json
import urllib.error
import zipfile

import pytest

from u2seg.errors import UserError
from u2seg.evaluation import download


def _offline(url, timeout=None):
    raise urllib.error.URLError("network is unreachable")


def test_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot download .*val2017.zip.*cocodataset.org"):
        download.ensure_coco(tmp_path / "coco", "val", panoptic=False, opener=_offline)
    assert not any((tmp_path / "coco").rglob("*.part"))


def test_unreachable_url_times_out_into_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot download"):
        download.ensure_coco(tmp_path, "val", panoptic=False, base_url="http://127.0.0.1:9", timeout=1)


def test_disabled_download_and_complete_root(tmp_path):
    with pytest.raises(UserError, match="downloading is disabled"):
        download.ensure_coco(tmp_path, "val", panoptic=False, allow_download=False)
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    summary = download.ensure_coco(tmp_path, "val", panoptic=False, opener=_offline)  # no network needed
    assert summary["downloaded"] == [] and summary["present"] == ["images", "annotations"]


class _Response(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _zip(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_download_and_extract_atomically(tmp_path):
    inner = _zip({"panoptic_val2017/000000000001.png": b"png"})
    archives = {
        "zips/val2017.zip": _zip({"val2017/000000000001.jpg": b"jpg", "val2017/000000000002.jpg": b"jpg"}),
        "annotations/annotations_trainval2017.zip": _zip({
            "annotations/instances_val2017.json": json.dumps({"images": []}),
            "annotations/instances_train2017.json": "{}"}),
        "annotations/panoptic_annotations_trainval2017.zip": _zip({
            "annotations/panoptic_val2017.json": "{}", "annotations/panoptic_val2017.zip": inner}),
    }
    fetched = []

    def opener(url, timeout=None):
        fetched.append(url)
        return _Response(archives[url.split("example.org/", 1)[1]])

    summary = download.ensure_coco(tmp_path, "val", panoptic=True, base_url="http://example.org", opener=opener)
    assert summary["downloaded"] == ["images", "annotations", "panoptic"] and len(fetched) == 3
    assert sorted(p.name for p in (tmp_path / "val2017").iterdir()) == ["000000000001.jpg", "000000000002.jpg"]
    assert json.loads((tmp_path / "annotations" / "instances_val2017.json").read_text()) == {"images": []}
    assert (tmp_path / "annotations" / "panoptic_val2017" / "000000000001.png").read_bytes() == b"png"
    assert not (tmp_path / ".download").exists() or not any((tmp_path / ".download").iterdir())
    # a second call has nothing to do
    assert download.ensure_coco(tmp_path, "val", panoptic=True, opener=_offline)["downloaded"] == []

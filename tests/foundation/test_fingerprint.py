"""u2seg.fingerprint: content digests of files, folders and settings; which parts changed."""
from __future__ import annotations

from u2seg import fingerprint as fp


def test_file_digest_follows_content_not_name_or_time(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * (fp.CHUNK + 7))  # more than one chunk
    b.write_bytes(b"x" * (fp.CHUNK + 7))
    assert fp.file_digest(a) == fp.file_digest(b)
    b.write_bytes(b"x" * (fp.CHUNK + 6) + b"y")
    assert fp.file_digest(a) != fp.file_digest(b)
    assert fp.file_digest(None) == ""
    assert fp.file_digest(tmp_path / "nope") == fp.MISSING


def test_folder_digest_sees_one_changed_added_or_renamed_file(tmp_path):
    root = tmp_path / "pngs"
    (root / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        (root / name).write_bytes(name.encode())
    base = fp.folder_digest(root)
    assert fp.folder_digest(root) == base
    (root / "b.png").write_bytes(b"other")
    changed = fp.folder_digest(root)
    assert changed != base
    (root / "b.png").write_bytes(b"b.png")
    assert fp.folder_digest(root) == base
    (root / "b.png").rename(root / "b2.png")
    assert fp.folder_digest(root) != base
    (root / "b2.png").rename(root / "b.png")
    (root / "d.png").write_bytes(b"new")
    assert fp.folder_digest(root) != base
    assert fp.folder_digest(root, "*.txt") != fp.folder_digest(root)  # the pattern selects the files
    assert fp.folder_digest(tmp_path / "absent") == fp.MISSING


def test_settings_digest_is_canonical():
    assert fp.settings_digest({"a": 1, "b": [1, 2]}) == fp.settings_digest({"b": [1, 2], "a": 1})
    assert fp.settings_digest({"a": 1}) != fp.settings_digest({"a": 2})
    assert fp.settings_digest({"a": 1}) != fp.settings_digest({"a": 1.5})


def test_stale_reason_names_the_changed_parts():
    old = {"settings": "s", "semantic": "x", "images": "i"}
    assert fp.stale_reason(old, dict(old)) is None
    reason = fp.stale_reason(old, {**old, "semantic": "y"})
    assert reason is not None and "semantic" in reason and "images" not in reason
    assert fp.changed_parts(old, {**old, "init_weights": ""}) == ["init_weights"]
    assert "older version" in fp.stale_reason(None, old)
    assert fp.combine(old) == fp.combine(dict(reversed(list(old.items()))))
    assert fp.combine(old) != fp.combine({**old, "images": "j"})

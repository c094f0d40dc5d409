"""Atomic file output: write to a temporary sibling, then rename into place.

A killed process therefore never leaves a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, directory: bool = False) -> Path:
    """A fresh temporary file or folder beside ``path``, with the permissions a plain create would give.

    (mkstemp/mkdtemp create 0600/0700; results in shared folders must be readable like any other file.)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        return tmp
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    With ``directory=True`` the temporary path is a fresh directory (for zarr stores or
    image folders) that replaces any existing directory at ``path``. On error the
    temporary is removed and ``path`` is untouched.
    """
    final = Path(path)
    tmp = _tmp_sibling(final, directory=directory)
    try:
        yield tmp
        if directory:
            if final.exists():
                old = final.with_name(f".{final.name}.old")
                if old.exists():
                    shutil.rmtree(old)
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old)
            else:
                tmp.rename(final)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 ``text`` to ``path``."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Atomically write ``obj`` as JSON (keys in insertion order, deterministic)."""
    write_text(path, json.dumps(obj, indent=indent, separators=(",", ":") if indent is None else None) + "\n")


def save_png(path: str | os.PathLike, array: "Any") -> None:
    """Atomically save a uint8 array (H, W) or (H, W, 3) as a PNG."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")

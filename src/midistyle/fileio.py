"""Small file helpers shared by the stages: atomic writes, staged folders, hashes, deterministic .npz."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    A reader (or a crash) never sees a half-written file; an existing file is
    replaced only once the new one is complete.
    """
    return _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """``obj`` as indented, key-sorted JSON, atomically; streamed to the file, so no copy of the whole text is held.

    ``default`` turns an object JSON cannot write into one it can (``json.dump``'s hook).
    """

    def write(fh) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        json.dump(obj, text, indent=2, sort_keys=True, default=default)
        text.write("\n")
        text.flush()
        text.detach()

    return _atomic_write(path, write)


def _atomic_write(path: str | Path, write) -> Path:
    """``write(binary file)`` into a temporary file beside ``path``, synced, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _remove(path: Path) -> None:
    """Remove a file, a link or a folder tree at ``path`` if there is one."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


@contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Build a folder in ``<final>.partial`` and put it in place of ``final`` only if the block succeeds.

    Yields a fresh, empty ``<final>.partial``. On success the old ``final`` is
    renamed to ``<final>.old``, the new folder renamed to ``final`` and only then
    the old one removed, so there is always a complete folder on disk under
    one of the two names. On an error the partial folder is removed and the
    old ``final`` is left as it was. A ``.partial`` or ``.old`` left by a
    killed run is removed when the next run starts.
    """
    final = Path(final)
    partial = final.with_name(final.name + ".partial")
    old = final.with_name(final.name + ".old")
    _remove(partial)
    _remove(old)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        _remove(partial)
        raise
    if final.is_symlink() or final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    _remove(old)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = True) -> bytes:
    """An ``.npz`` (readable by ``np.load``) whose bytes depend only on the arrays.

    ``np.savez_compressed`` stamps each member with the current time; here every
    member gets a fixed timestamp and the members are written in sorted order,
    so the same input gives byte-identical files. ``compress``: deflated members
    (``np.savez_compressed``), else stored ones (``np.savez``).
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name in sorted(arrays):
            arr_buf = io.BytesIO()
            np.lib.format.write_array(arr_buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, arr_buf.getvalue(), compresslevel=6 if compress else None)
    return buf.getvalue()

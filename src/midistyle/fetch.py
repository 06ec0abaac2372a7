"""Downloads and archive extraction for the download stage, with the safety checks.

A download is streamed to a hidden ``.<name>.part`` file beside its final name,
capped in size while it streams, checked against its sha256 and only then renamed,
so an interrupted or tampered download never looks like a finished one.

Archives come from the internet, so their member names are untrusted: a member
with an absolute path, a ``..`` part, a path that resolves outside the target
folder, or a MIDI-named link is refused (the whole archive, before anything is
written), and what an archive extracts to is capped as well (zip bombs).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO

from midistyle.errors import UserError

MIDI_SUFFIXES = (".mid", ".midi")
ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
CHUNK = 1 << 16
TIMEOUT_S = 60.0


def is_midi_name(name: str) -> bool:
    return name.lower().endswith(MIDI_SUFFIXES)


def url_file_name(url: str) -> str:
    """The last part of the URL's path, made filesystem-safe (query and fragment dropped)."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rpartition("/")[2])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")
    return name or "download"


def url_kind(url: str) -> str:
    """"midi", "zip" or "tar", from the URL's file name; a UserError for anything else."""
    name = url_file_name(url).lower()
    if name.endswith(MIDI_SUFFIXES):
        return "midi"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    raise UserError(f"{url}: not a .mid/.midi file or a .zip/.tar/.tar.gz/.tgz archive")


# ---------------------------------------------------------------- download
def fetch_url(url: str, sha256: str, dest_dir: Path, max_bytes: int, timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` into ``dest_dir`` (named after the URL) and return the file.

    The file appears under its final name only once complete, within
    ``max_bytes`` and matching ``sha256``; on any failure the ``.part`` file is
    removed and a UserError names the URL.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = url_file_name(url)
    final = dest_dir / name
    part = dest_dir / f".{name}.part"
    try:
        actual = _stream_to(url, part, max_bytes, timeout)
        if actual != sha256.lower():
            raise UserError(f"{url}: sha256 mismatch: expected {sha256.lower()}, got {actual}")
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    return final


def _stream_to(url: str, part: Path, max_bytes: int, timeout: float) -> str:
    """Stream the response body to ``part``; returns its sha256. Errors name the URL."""
    digest = hashlib.sha256()
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": "midistyle"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, open(part, "wb") as fh:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise UserError(f"{url}: {int(length)} bytes is over the cap of {max_bytes} (data.max_download_mb)")
            while chunk := resp.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UserError(f"{url}: more than {max_bytes} bytes, the cap (data.max_download_mb)")
                digest.update(chunk)
                fh.write(chunk)
    except urllib.error.HTTPError as exc:
        raise UserError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise UserError(f"{url}: download failed: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UserError(f"{url}: download failed: {type(exc).__name__}: {exc}") from None
    return digest.hexdigest()


# ---------------------------------------------------------------- archives
@dataclass(frozen=True)
class Member:
    """One archive entry, as far as the safety checks need it."""

    name: str  # as stored in the archive
    size: int  # declared uncompressed size
    is_file: bool
    is_link: bool
    open: Callable[[], IO[bytes]]


def archive_kind(path: Path) -> str:
    """"zip" or "tar" from the file name (what the URL called it)."""
    name = path.name.lower()
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    raise UserError(f"{path}: not a .zip/.tar/.tar.gz/.tgz archive")


@contextmanager
def _members(archive: Path) -> Iterator[list[Member]]:
    """The archive's entries; read errors become a UserError naming the archive."""
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                yield [_zip_member(zf, info) for info in zf.infolist()]
        else:
            with tarfile.open(archive, "r:*") as tf:
                yield [_tar_member(tf, info) for info in tf.getmembers()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error, RuntimeError) as exc:
        raise UserError(f"{archive}: unreadable archive: {type(exc).__name__}: {exc}") from None


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    is_link = stat.S_ISLNK(info.external_attr >> 16)
    return Member(info.filename, info.file_size, not info.is_dir() and not is_link, is_link, lambda: zf.open(info))


def _tar_member(tf: tarfile.TarFile, info: tarfile.TarInfo) -> Member:
    def opener() -> IO[bytes]:
        fh = tf.extractfile(info)
        if fh is None:  # not a regular file; _check_members keeps these out
            raise tarfile.TarError(f"member {info.name} has no data")
        return fh

    return Member(info.name, info.size, info.isfile(), info.issym() or info.islnk(), opener)


def _unsafe_reason(name: str, dest_dir: Path) -> str | None:
    """Why extracting ``name`` under ``dest_dir`` could write elsewhere, or None."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "absolute path"
    if ".." in posix.split("/"):
        return "path contains '..'"
    root = dest_dir.resolve()
    if not (root / posix).resolve().is_relative_to(root):
        return "path resolves outside the target folder"
    return None


def _relative_name(name: str) -> str:
    """A checked member name as a clean relative POSIX path ("./a//b.mid" -> "a/b.mid")."""
    return "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _select(archive: Path, members: list[Member], dest_dir: Path, include: str) -> list[Member]:
    """The MIDI members to extract, after refusing the archive for any unsafe member."""
    chosen: dict[str, Member] = {}
    for m in members:
        reason = _unsafe_reason(m.name, dest_dir)
        if reason is None and m.is_link and is_midi_name(m.name):
            reason = "MIDI member is a link"
        if reason is not None:
            raise UserError(f"{archive}: refusing member {m.name!r}: {reason}")
        rel = _relative_name(m.name)
        if m.is_file and is_midi_name(rel) and fnmatchcase(rel, include):
            chosen.setdefault(rel, m)  # a repeated name: the first one wins
    return [chosen[k] for k in sorted(chosen)]


def extract_archive(archive_path: Path, dest_dir: Path, include: str = "*", max_bytes: int = 512 << 20) -> list[Path]:
    """Extract the MIDI members of a .zip/.tar(.gz) matching ``include`` under ``dest_dir``.

    Returns the written files, sorted by member path. Every member is checked
    before anything is written; extraction stops at ``max_bytes`` in total (a
    UserError, with the files written so far removed). Each file is written to a
    ``.part`` name and renamed when complete.
    """
    archive_path, dest_dir = Path(archive_path), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with _members(archive_path) as members:
            selected = _select(archive_path, members, dest_dir, include)
            declared = sum(m.size for m in selected)
            if declared > max_bytes:
                raise UserError(f"{archive_path}: MIDI members total {declared} bytes, over the cap of {max_bytes} "
                                "(data.max_download_mb)")
            budget = max_bytes
            for m in selected:
                target = dest_dir / _relative_name(m.name)
                budget -= _extract_member(archive_path, m, target, budget)
                written.append(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _extract_member(archive: Path, member: Member, target: Path, budget: int) -> int:
    """Copy one member to ``target`` via a .part file, at most ``budget`` bytes; returns its size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    size = 0
    try:
        with member.open() as src, open(part, "wb") as dst:
            while chunk := src.read(CHUNK):
                size += len(chunk)
                if size > budget:
                    raise UserError(f"{archive}: member {member.name!r} takes the extracted size over the cap "
                                    "(data.max_download_mb)")
                dst.write(chunk)
        os.replace(part, target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, RuntimeError) as exc:
        raise UserError(f"{archive}: cannot read member {member.name!r}: {type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise UserError(f"{archive}: cannot extract member {member.name!r} to {target}: {exc.strerror or exc}") from None
    finally:
        part.unlink(missing_ok=True)
    return size


def copy_atomic(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` via a hidden .part file, so ``dest`` is whole or absent."""
    part = dest.with_name(f".{dest.name}.part")
    try:
        shutil.copyfile(src, part)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest

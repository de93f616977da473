"""Fetching a model version from an ``http(s)://`` URI: download, unpack, check.

The archive (``.tar.gz``/``.tgz`` or ``.zip``, recognised by its content, not its name) holds
one version directory as ``train`` writes it, at its root or under one top-level directory.
It is streamed into the cache directory with a size limit, unpacked with the same limit on
the unpacked total (no archive bomb fills the pod's disk), and must contain
``saved_model.pb``. Every failure is a :class:`ModelDownloadError` with one clear line.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

__all__ = ["SCHEMES", "ModelDownloadError", "fetch_model"]

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
SAVED_MODEL = "saved_model.pb"
CHUNK = 1 << 20


class ModelDownloadError(Exception):
    """The model at the URI could not be fetched, unpacked or recognised."""


def _download(uri: str, target: Path, max_bytes: int, timeout_s: float) -> int:
    request = urllib.request.Request(uri, headers={"User-Agent": "modelservice-serving"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ModelDownloadError(
                    f"{uri} is {int(length)} bytes, above the limit of {max_bytes}"
                )
            size = 0
            with target.open("wb") as out:
                while chunk := response.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ModelDownloadError(f"{uri} exceeds the limit of {max_bytes} bytes")
                    out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise ModelDownloadError(f"GET {uri}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelDownloadError(f"GET {uri}: {reason}") from exc
    return size


def _safe(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def _unpack(archive: Path, into: Path, max_bytes: int, uri: str) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if any(not _safe(m.filename) for m in members):
                raise ModelDownloadError(f"{uri}: the archive has paths outside its root")
            if sum(m.file_size for m in members) > max_bytes:
                raise ModelDownloadError(f"{uri}: unpacked it exceeds the limit of {max_bytes}")
            zf.extractall(into)
        return
    if not tarfile.is_tarfile(archive):
        raise ModelDownloadError(f"{uri} is not a .tar.gz, .tgz or .zip archive")
    try:
        with tarfile.open(archive, "r:*") as tf:
            entries = tf.getmembers()
            if sum(e.size for e in entries if e.isfile()) > max_bytes:
                raise ModelDownloadError(f"{uri}: unpacked it exceeds the limit of {max_bytes}")
            # The "data" filter refuses absolute paths, "..", links out of the tree and devices.
            tf.extractall(into, filter="data")
    except tarfile.TarError as exc:  # a corrupt archive, or a member the filter refused
        detail = " ".join(str(exc).split())
        raise ModelDownloadError(f"{uri}: cannot unpack: {detail}") from exc


def _version_dir(root: Path, uri: str) -> Path:
    if (root / SAVED_MODEL).is_file():
        return root
    found = sorted(p.parent for p in root.glob(f"*/{SAVED_MODEL}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelDownloadError(f"{uri}: no {SAVED_MODEL} at the archive's root or one level down")
    names = ", ".join(p.name for p in found)
    raise ModelDownloadError(f"{uri}: several SavedModels in one archive ({names})")


def fetch_model(uri: str, cache_dir: Path, max_bytes: int, timeout_s: float) -> Path:
    """Download and unpack the model at ``uri`` under ``cache_dir``; return its directory."""
    scheme = uri.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise ModelDownloadError(
            f"{uri}: scheme {scheme}:// is not supported (supported: http://, https://)"
        )
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    unpacked = cache_dir / key
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # A restarted container may find a half-unpacked earlier try: start clean.
        shutil.rmtree(unpacked, ignore_errors=True)
        archive = cache_dir / f"{key}.download"
        started = time.perf_counter()
        size = _download(uri, archive, max_bytes, timeout_s)
        unpacked.mkdir()
        try:
            _unpack(archive, unpacked, max_bytes, uri)
        finally:
            archive.unlink(missing_ok=True)  # the cache holds the model once, not twice
    except OSError as exc:
        raise ModelDownloadError(f"{uri}: cannot write under {cache_dir}: {exc}") from exc
    model_dir = _version_dir(unpacked, uri)
    log.info(
        "model downloaded",
        extra={"uri": uri, "bytes": size, "seconds": round(time.perf_counter() - started, 3)},
    )
    return model_dir

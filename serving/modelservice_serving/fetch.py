"""Fetching a model version from an ``http(s)://`` URI: download, unpack, check.

The archive (``.tar.gz``/``.tgz`` or ``.zip``, recognised by its content, not its name) holds
one version directory as ``train`` writes it, at its root or under one top-level directory.
It is downloaded through :mod:`.download` (no address inside the cluster, one total deadline,
a byte limit), unpacked with limits on the unpacked total and on the number of entries (no
archive bomb fills the pod's disk or its inodes), and must contain ``saved_model.pb``. Every
failure, a corrupt archive included, is a :class:`ModelDownloadError` with one clear line
that names the URL redacted and never quotes a response.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from . import credentials
from .download import SCHEMES, DownloadError, DownloadPolicy, download, parse_networks
from .redact import redact_url

__all__ = ["MAX_ENTRIES", "SCHEMES", "URI_SCHEMES", "ModelDownloadError", "fetch_model"]

log = logging.getLogger(__name__)

SAVED_MODEL = "saved_model.pb"
# What spec.model.uri may name: http(s), or s3://bucket/key with S3 keys in the credentials.
URI_SCHEMES = (*SCHEMES, "s3")
# A SavedModel is a handful of files; 10,000 entries leaves room for assets.
MAX_ENTRIES = 10_000
# What a corrupt archive raises from zipfile, tarfile, gzip and zlib.
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, ValueError)


class ModelDownloadError(Exception):
    """The model at the URI could not be fetched, unpacked or recognised."""


def _safe(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def _unpack(archive: Path, into: Path, max_bytes: int, max_entries: int, uri: str) -> None:
    try:
        if zipfile.is_zipfile(archive):
            _unzip(archive, into, max_bytes, max_entries, uri)
        elif tarfile.is_tarfile(archive):
            _untar(archive, into, max_bytes, max_entries, uri)
        else:
            raise ModelDownloadError(f"{uri} is not a .tar.gz, .tgz or .zip archive")
    except _CORRUPT as exc:  # a corrupt archive, or a member the tar filter refused
        detail = " ".join(str(exc).split())[:200]
        raise ModelDownloadError(
            f"{uri}: cannot unpack: {type(exc).__name__}: {detail}".rstrip(": ")
        ) from exc


def _unzip(archive: Path, into: Path, max_bytes: int, max_entries: int, uri: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > max_entries:
            raise ModelDownloadError(f"{uri}: more than {max_entries} entries in the archive")
        if any(not _safe(m.filename) for m in members):
            raise ModelDownloadError(f"{uri}: the archive has paths outside its root")
        # zipfile stops reading a member at its declared size, so the sum bounds the disk.
        if sum(m.file_size for m in members) > max_bytes:
            raise ModelDownloadError(f"{uri}: unpacked it exceeds the limit of {max_bytes}")
        zf.extractall(into)


def _untar(archive: Path, into: Path, max_bytes: int, max_entries: int, uri: str) -> None:
    with tarfile.open(archive, "r:*") as tf:
        # Walk the headers one by one: stop at the first entry over a limit instead of
        # reading (and keeping) hundreds of thousands of headers first.
        count = 0
        total = 0
        while (member := tf.next()) is not None:
            count += 1
            total += member.size if member.isfile() else 0
            if count > max_entries:
                raise ModelDownloadError(f"{uri}: more than {max_entries} entries in the archive")
            if total > max_bytes:
                raise ModelDownloadError(f"{uri}: unpacked it exceeds the limit of {max_bytes}")
        # The "data" filter refuses absolute paths, "..", links out of the tree and devices.
        tf.extractall(into, filter="data")


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


def fetch_model(
    uri: str,
    cache_dir: Path,
    max_bytes: int,
    timeout_s: float,
    *,
    allowed_networks: str = "",
    credentials_dir: Path | None = None,
    max_entries: int = MAX_ENTRIES,
) -> Path:
    """Download and unpack the model at ``uri`` under ``cache_dir``; return its directory.

    ``timeout_s`` is the total deadline of the download; ``allowed_networks`` (comma
    separated CIDRs) opens addresses inside the cluster or host; ``credentials_dir`` is a
    mounted Secret (:mod:`.credentials`).
    """
    shown = redact_url(uri)
    scheme = uri.partition("://")[0].lower()
    if scheme not in URI_SCHEMES:
        raise ModelDownloadError(
            f"{shown}: scheme {scheme}:// is not supported (supported: http://, https://, s3://)"
        )
    try:
        found = credentials.read(credentials_dir)
        policy = DownloadPolicy(
            max_bytes=max_bytes,
            deadline_s=timeout_s,
            allowed_networks=parse_networks(allowed_networks),
            headers=found.headers,
            s3=found.s3,
        )
    except (credentials.CredentialsError, ValueError) as exc:
        raise ModelDownloadError(f"{shown}: {exc}") from exc
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    unpacked = cache_dir / key
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # A restarted container may find a half-unpacked earlier try: start clean.
        shutil.rmtree(unpacked, ignore_errors=True)
        archive = cache_dir / f"{key}.download"
        started = time.perf_counter()
        try:
            fetched = download(uri, archive, policy)
            unpacked.mkdir()
            _unpack(archive, unpacked, max_bytes, max_entries, shown)
        except DownloadError as exc:
            raise ModelDownloadError(str(exc)) from exc
        finally:
            archive.unlink(missing_ok=True)  # the cache holds the model once, not twice
    except OSError as exc:
        raise ModelDownloadError(
            f"{shown}: cannot write under {cache_dir}: {exc.strerror or exc}"
        ) from exc
    model_dir = _version_dir(unpacked, shown)
    log.info(
        "model downloaded",
        extra={
            "uri": shown,
            "bytes": fetched.size,
            "sha256": fetched.sha256,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return model_dir

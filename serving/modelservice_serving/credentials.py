"""Download credentials from a mounted Secret: files, never flags, environment or logs.

The operator mounts the Secret named by ``spec.training.datasetCredentials`` or
``spec.model.credentials`` read-only into the pod and passes only the directory
(``--dataset-credentials-dir`` / ``--model-credentials-dir``). The keys it may hold:

- ``token``: sent as ``Authorization: Bearer <token>``;
- ``username`` and ``password``: sent as HTTP basic authentication;
- S3-style keys, the names AWS's tools use: ``AWS_ACCESS_KEY_ID`` and
  ``AWS_SECRET_ACCESS_KEY``, optionally ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or
  ``AWS_DEFAULT_REGION``; default ``us-east-1``) and ``AWS_ENDPOINT_URL`` (an S3-compatible
  store); every request to the URI's host is signed with SigV4 (:mod:`.s3auth`), and
  ``s3://bucket/key`` URIs can be fetched.

The values are read when the download starts and are sent to the URL's own host only
(:mod:`.download` drops them on a redirect to another host). No message names a value.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from .s3auth import DEFAULT_REGION, S3Keys, S3UriError

__all__ = ["KEYS", "S3_KEYS", "Credentials", "CredentialsError", "read", "request_headers"]

KEYS = ("token", "username", "password")
S3_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
)


@dataclass(frozen=True)
class Credentials:
    """What a credentials directory holds: fixed headers (bearer, basic) or S3 keys."""

    headers: dict[str, str] = field(default_factory=dict, repr=False)
    s3: S3Keys | None = None


class CredentialsError(Exception):
    """The credentials directory is missing, unreadable or holds no usable key."""


def _read(directory: Path, key: str) -> str | None:
    path = directory / key
    if not path.is_file():
        return None
    try:
        # A trailing newline (echo "token" > file) is not part of the credential.
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeError) as exc:
        raise CredentialsError(f"cannot read credentials key {key!r} in {directory}") from exc


def _s3_keys(directory: Path) -> S3Keys | None:
    key_id, secret = (_read(directory, k) for k in S3_KEYS[:2])
    if not key_id and not secret:
        return None
    if not key_id or not secret:
        raise CredentialsError(
            f"credentials in {directory} need both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    region = _read(directory, "AWS_REGION") or _read(directory, "AWS_DEFAULT_REGION")
    try:
        return S3Keys(
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=_read(directory, "AWS_SESSION_TOKEN") or None,
            region=region or DEFAULT_REGION,
            endpoint=_read(directory, "AWS_ENDPOINT_URL") or None,
        )
    except S3UriError as exc:
        raise CredentialsError(f"credentials in {directory}: {exc}") from exc


def read(directory: Path | None) -> Credentials:
    """The credentials in ``directory`` (none if None): a token, a user and password, or S3 keys."""
    if directory is None:
        return Credentials()
    if not directory.is_dir():
        raise CredentialsError(f"credentials directory {directory} does not exist")
    headers = _headers(directory)
    if headers:
        return Credentials(headers=headers)
    s3 = _s3_keys(directory)
    if s3 is not None:
        return Credentials(s3=s3)
    raise CredentialsError(
        f"credentials in {directory} hold none of: token, username and password, or "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


def request_headers(directory: Path | None) -> dict[str, str]:
    """Fixed HTTP headers that authenticate with ``directory`` (none for S3 keys or None)."""
    return read(directory).headers


def _headers(directory: Path) -> dict[str, str]:
    token = _read(directory, "token")
    if token:
        return {"Authorization": f"Bearer {token}"}
    username, password = _read(directory, "username"), _read(directory, "password")
    if username is not None and password is not None:
        pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {pair}"}
    return {}

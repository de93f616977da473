"""Download credentials from a mounted Secret: files, never flags, environment or logs.

The operator mounts the Secret named by ``spec.training.datasetCredentials`` or
``spec.model.credentials`` read-only into the pod and passes only the directory
(``--dataset-credentials-dir`` / ``--model-credentials-dir``). The keys it may hold:

- ``token``: sent as ``Authorization: Bearer <token>``;
- ``username`` and ``password``: sent as HTTP basic authentication.

The values are read when the download starts and are sent to the URL's own host only
(:mod:`.download` drops them on a redirect to another host). No message names a value.
"""

from __future__ import annotations

import base64
from pathlib import Path

__all__ = ["KEYS", "CredentialsError", "request_headers"]

KEYS = ("token", "username", "password")


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


def request_headers(directory: Path | None) -> dict[str, str]:
    """HTTP headers that authenticate with the credentials in ``directory`` (none if None)."""
    if directory is None:
        return {}
    if not directory.is_dir():
        raise CredentialsError(f"credentials directory {directory} does not exist")
    token = _read(directory, "token")
    if token:
        return {"Authorization": f"Bearer {token}"}
    username, password = _read(directory, "username"), _read(directory, "password")
    if username is not None and password is not None:
        pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {pair}"}
    raise CredentialsError(
        f"credentials in {directory} hold none of: token, or username and password"
    )

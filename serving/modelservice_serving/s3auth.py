"""S3-style access without presigned URLs: ``s3://`` URIs and AWS Signature Version 4.

A credentials Secret may hold S3-style keys (:mod:`.credentials` reads them): an access key
id, a secret access key, an optional session token, a region and an optional endpoint (an
S3-compatible store such as MinIO). With them

- ``s3://bucket/key`` becomes ``https://bucket.s3.<region>.amazonaws.com/key`` (path style,
  ``https://s3.<region>.amazonaws.com/bucket/key``, for a bucket name with dots, which a
  virtual host's TLS certificate does not cover), or ``<endpoint>/bucket/key`` with an
  endpoint;
- every GET to the URI's own host is signed with SigV4 (:func:`sign_get`), as AWS documents
  for S3: ``Authorization``, ``x-amz-date``, ``x-amz-content-sha256`` (of the empty body)
  and ``x-amz-security-token`` with a session token.

The request itself goes through :mod:`.download` (address checks after DNS and on every
redirect, one deadline, byte limits); a redirect to another host is sent unsigned. The
secret key and the session token are never part of a ``repr``, a message or a log line: only
the derived signature leaves this module, in the request's headers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = [
    "ALGORITHM",
    "DEFAULT_REGION",
    "EMPTY_SHA256",
    "S3Keys",
    "S3UriError",
    "s3_url",
    "sign",
    "sign_get",
]

ALGORITHM = "AWS4-HMAC-SHA256"
DEFAULT_REGION = "us-east-1"
# SHA-256 of an empty body: what a GET sends as x-amz-content-sha256.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# S3's bucket naming rules (3-63 lowercase letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9-]{1,32}$")


class S3UriError(ValueError):
    """An ``s3://`` URI or an S3 endpoint that cannot be turned into a request URL."""


@dataclass(frozen=True)
class S3Keys:
    """S3-style credentials; the secret parts are left out of ``repr``."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = DEFAULT_REGION
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if not _REGION.match(self.region):
            raise S3UriError(f"region {self.region!r} is not an AWS region name")
        if self.endpoint is not None:
            parts = urllib.parse.urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise S3UriError("the S3 endpoint must be an http:// or https:// URL with a host")
            if parts.username or parts.password or parts.query or parts.fragment:
                raise S3UriError("the S3 endpoint must not carry user info, a query or fragment")


def s3_url(uri: str, keys: S3Keys) -> str:
    """The http(s) URL of ``s3://bucket/key`` at AWS or at ``keys.endpoint``."""
    parts = urllib.parse.urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if parts.scheme != "s3" or not _BUCKET.match(bucket) or not key:
        raise S3UriError(f"{parts.scheme}://{bucket}/...: expected s3://bucket/key")
    path = urllib.parse.quote(urllib.parse.unquote(key), safe="/~")
    if keys.endpoint is not None:
        return f"{keys.endpoint.rstrip('/')}/{bucket}/{path}"
    if "." in bucket:
        return f"https://s3.{keys.region}.amazonaws.com/{bucket}/{path}"
    return f"https://{bucket}.s3.{keys.region}.amazonaws.com/{path}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    encoded = sorted(
        (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in pairs
    )
    return "&".join(f"{k}={v}" for k, v in encoded)


def sign(
    keys: S3Keys,
    method: str,
    url: str,
    headers: Mapping[str, str],
    when: datetime,
    *,
    service: str = "s3",
    payload_sha256: str = EMPTY_SHA256,
) -> str:
    """The ``Authorization`` value for a request whose headers (Host included) are given.

    Every given header is signed. The path is encoded once, as S3 expects (other services
    encode it twice; a path of unreserved characters is the same either way).
    """
    parts = urllib.parse.urlsplit(url)
    stamp = when.astimezone(UTC)
    date, moment = stamp.strftime("%Y%m%d"), stamp.strftime("%Y%m%dT%H%M%SZ")
    canonical_headers = {
        name.lower(): " ".join(value.strip().split()) for name, value in headers.items()
    }
    names = sorted(canonical_headers)
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(urllib.parse.unquote(parts.path or "/"), safe="/~"),
            _canonical_query(parts.query),
            "".join(f"{name}:{canonical_headers[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{date}/{keys.region}/{service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, moment, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()]
    )
    key = _hmac(f"AWS4{keys.secret_access_key}".encode(), date)
    for part in (keys.region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={keys.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )


def sign_get(keys: S3Keys, url: str, host: str, when: datetime | None = None) -> dict[str, str]:
    """The headers that authenticate an S3 GET of ``url`` sent with ``Host: host``."""
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    headers = {
        "Host": host,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": moment.strftime("%Y%m%dT%H%M%SZ"),
    }
    if keys.session_token:
        headers["x-amz-security-token"] = keys.session_token
    headers["Authorization"] = sign(keys, "GET", url, headers, moment)
    return headers

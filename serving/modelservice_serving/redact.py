"""Redaction of URLs: the one function every status, argument, event and log line goes through.

A URL's user info (``user:password@``), query string (presigned signatures, tokens) and
fragment may carry credentials. Whatever this project writes where others can read it keeps
only scheme, host, port and path. The operator imports this module too (its image carries it
without the rest of the serving package), so both sides redact the same way.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

__all__ = ["REDACTED", "redact_json", "redact_text", "redact_url"]

REDACTED = "REDACTED"
# scheme://... up to whitespace or a quote; punctuation that ends a sentence or a clause
# ("GET <url>: HTTP 404") is not part of it.
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>`]*[^\s\"'<>`.,;:!?)\]}]")


def redact_url(url: str) -> str:
    """``url`` without user info, query string and fragment (marked where they were).

    ``https://u:p@host/m.tgz?X-Amz-Signature=s`` becomes ``https://REDACTED@host/m.tgz?REDACTED``.
    A string that is not ``scheme://...`` is returned unchanged; one that cannot be parsed is
    reduced to its scheme, so nothing unparsed leaks.
    """
    scheme, sep, _ = url.partition("://")
    if not sep:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
    except ValueError:  # e.g. an invalid IPv6 literal: keep nothing of it
        return f"{scheme}://{REDACTED}"
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        netloc = f"{REDACTED}@{hostport}" if userinfo else hostport
    query = REDACTED if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def redact_json(value: Any) -> Any:
    """A copy of a JSON-like value with :func:`redact_text` applied to every string in it."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_json(item) for item in value]
    return value

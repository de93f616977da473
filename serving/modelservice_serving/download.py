"""Downloads over http(s) that cannot reach inside the cluster, run forever, or echo secrets.

Both the dataset loader (``train``) and the model fetcher (``serve --model-uri``) download
through :func:`download`, which

- accepts only ``http://`` and ``https://``, on the first request and on every redirect
  (``s3://bucket/key`` with S3 keys is first turned into its http(s) URL, :mod:`.s3auth`);
- resolves the host itself and refuses any address that is not globally routable (loopback,
  link-local such as ``169.254.169.254``, private ranges that hold pod and Service addresses,
  shared, reserved, multicast) unless an allow-listed network holds it, then connects to
  exactly the address it checked (a second DNS answer cannot swap it: no DNS rebinding);
- follows at most :data:`MAX_REDIRECTS` redirects itself, checking each target as above;
- enforces one total deadline over resolution, connection, headers and body (a watchdog
  closes the socket when it passes, so a trickling server cannot hold it), and a byte limit;
- never puts a response body or a server-chosen reason phrase into an error, and redacts
  every URL it names (:mod:`.redact`).

It uses the standard library's ``http.client`` directly, so no proxy variable or ``.netrc``
changes where a request goes.
"""

from __future__ import annotations

import contextlib
import hashlib
import http
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .redact import redact_url
from .s3auth import S3Keys, S3UriError, s3_url, sign_get

__all__ = [
    "MAX_REDIRECTS",
    "SCHEMES",
    "DownloadError",
    "DownloadPolicy",
    "Downloaded",
    "download",
    "parse_networks",
]

SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
CHUNK = 1 << 20
_REDIRECTS = (301, 302, 303, 307, 308)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DownloadError(Exception):
    """A download was refused or failed; the message is one line with no secret in it."""


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """Networks from ``10.0.0.0/8,127.0.0.1`` (comma separated) or a list of such strings."""
    items = text.split(",") if isinstance(text, str) else list(text)
    networks: list[Network] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from exc
    return tuple(networks)


@dataclass(frozen=True)
class DownloadPolicy:
    """Limits of one download.

    ``allowed_networks``: addresses that are refused by default but allowed here (for a
    model store inside the cluster, or a test server on loopback). ``headers`` are sent to
    the first host only; a redirect to another host drops them (as browsers drop
    ``Authorization``), so a credential never follows a redirect elsewhere. ``s3``: keys that
    sign every request to the first host (SigV4, fresh for each redirect on that host) and
    let the URL be ``s3://bucket/key``.
    """

    max_bytes: int
    deadline_s: float = 300.0
    allowed_networks: tuple[Network, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    max_redirects: int = MAX_REDIRECTS
    s3: S3Keys | None = None


@dataclass(frozen=True)
class Downloaded:
    """What was written: its size, SHA-256 and the (redacted) URL it finally came from."""

    size: int
    sha256: str
    url: str


def _unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_allowed(address: str, allowed: tuple[Network, ...]) -> bool:
    """Whether ``address`` may be contacted: globally routable, or in an allowed network."""
    ip = _unmapped(ipaddress.ip_address(address.split("%", 1)[0]))
    if any(ip in network for network in allowed if network.version == ip.version):
        return True
    return ip.is_global and not ip.is_multicast


class _Deadline:
    """The one deadline of a download and a watchdog that closes the socket at it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.passed = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0:
            self.passed = True
            raise TimeoutError
        return left

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.passed and sock is not None:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            if self._sock is not None:
                _shutdown(self._sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _resolve(host: str, port: int, url: str, policy: DownloadPolicy, deadline: _Deadline) -> str:
    """The first address of ``host`` that is allowed; every address must be (no mixing)."""
    deadline.left()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadError(f"GET {url}: cannot resolve {host}: {exc.args[-1]}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = [a for a in addresses if not address_allowed(a, policy.allowed_networks)]
    if refused or not addresses:
        raise DownloadError(
            f"GET {url}: refused: {host} resolves to {', '.join(refused) or 'nothing'}, "
            "an address inside the cluster or host (loopback, link-local, private or "
            "reserved); allow its network explicitly if that is intended"
        )
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a checked address, whatever the host name resolves to later."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(_PinnedHTTP):
    default_port = 443

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, address, timeout)
        self._tls = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self.host)


def _status_text(code: int) -> str:
    # The standard phrase, never the server's own (which could carry anything).
    try:
        return f"HTTP {code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


def download(url: str, target: Path, policy: DownloadPolicy) -> Downloaded:
    """Download ``url`` into ``target`` within ``policy``; raise :class:`DownloadError`."""
    deadline = _Deadline(policy.deadline_s)
    try:
        return _download(url, target, policy, deadline)
    except TimeoutError as exc:
        raise DownloadError(
            f"GET {redact_url(url)}: not complete within the deadline of {policy.deadline_s:g}s"
        ) from exc
    except OSError as exc:
        if deadline.passed:
            raise DownloadError(
                f"GET {redact_url(url)}: not complete within the deadline of {policy.deadline_s:g}s"
            ) from exc
        raise DownloadError(f"GET {redact_url(url)}: {exc.strerror or type(exc).__name__}") from exc
    except (http.client.HTTPException, ValueError) as exc:
        if deadline.passed:
            raise DownloadError(
                f"GET {redact_url(url)}: not complete within the deadline of {policy.deadline_s:g}s"
            ) from exc
        raise DownloadError(
            f"GET {redact_url(url)}: invalid HTTP response ({type(exc).__name__})"
        ) from exc
    finally:
        deadline.cancel()


def _start(url: str, policy: DownloadPolicy) -> str:
    """The first http(s) URL to request: ``url`` itself, or where an ``s3://`` URI lives."""
    if urllib.parse.urlsplit(url).scheme.lower() != "s3":
        return url
    if policy.s3 is None:
        raise DownloadError(
            f"GET {redact_url(url)}: s3:// needs S3-style keys in the credentials Secret "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    try:
        return s3_url(url, policy.s3)
    except S3UriError as exc:
        raise DownloadError(f"GET {redact_url(url)}: {exc}") from exc


def _host_header(parts: urllib.parse.SplitResult, default_port: int) -> str:
    # What http.client would send; given explicitly when signed, so both are the same.
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return host if parts.port in (None, default_port) else f"{host}:{parts.port}"


def _download(url: str, target: Path, policy: DownloadPolicy, deadline: _Deadline) -> Downloaded:
    current = _start(url, policy)
    first_host: str | None = None
    for _ in range(policy.max_redirects + 1):
        shown = redact_url(current)
        parts = urllib.parse.urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise DownloadError(
                f"GET {shown}: scheme {scheme or '(none)'}:// refused (only http://, https://)"
            )
        host = parts.hostname
        if not host:
            raise DownloadError(f"GET {shown}: no host")
        port = parts.port or (443 if scheme == "https" else 80)
        first_host = first_host or host
        address = _resolve(host, port, shown, policy, deadline)
        connection_class = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
        connection = connection_class(host, port, address, deadline.left())
        try:
            path = parts.path or "/"
            if parts.query:
                path = f"{path}?{parts.query}"
            headers = {"User-Agent": "modelservice-serving", "Accept-Encoding": "identity"}
            if host == first_host:
                headers.update(policy.headers)
                if policy.s3 is not None:
                    default_port = 443 if scheme == "https" else 80
                    headers.update(sign_get(policy.s3, current, _host_header(parts, default_port)))
            connection.connect()
            deadline.watch(connection.sock)
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise DownloadError(
                        f"GET {shown}: {_status_text(response.status)} without Location"
                    )
                current = urllib.parse.urljoin(current, location)
                continue
            if response.status != 200:
                raise DownloadError(f"GET {shown}: {_status_text(response.status)}")
            return _body(response, target, policy, deadline, shown)
        finally:
            deadline.watch(None)
            connection.close()
    raise DownloadError(f"GET {redact_url(url)}: more than {policy.max_redirects} redirects")


def _body(
    response: http.client.HTTPResponse,
    target: Path,
    policy: DownloadPolicy,
    deadline: _Deadline,
    shown: str,
) -> Downloaded:
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > policy.max_bytes:
        raise DownloadError(
            f"GET {shown}: {int(length)} bytes, above the limit of {policy.max_bytes}"
        )
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as out:
        while True:
            deadline.left()
            # read1: at most one socket read, so the deadline is checked between reads.
            chunk = response.read1(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > policy.max_bytes:
                raise DownloadError(f"GET {shown}: exceeds the limit of {policy.max_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
    if deadline.passed:
        raise TimeoutError
    if response.length:  # the connection closed before Content-Length bytes came
        raise DownloadError(f"GET {shown}: the response ended {response.length} bytes short")
    return Downloaded(size, digest.hexdigest(), shown)

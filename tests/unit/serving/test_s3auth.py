"""S3-style credentials: SigV4 against AWS's published examples, and a fake S3 on loopback.

The signer must reproduce the signatures of the S3 documentation's worked examples
("Signature Calculations for the Authorization Header: Transferring Payload in a Single
Chunk": GET Object, PUT Object, GET Bucket Lifecycle, Get Bucket). The fake S3 endpoint
recomputes each request's signature from the headers it received and answers 403 on any
difference, so a header sent but not signed (or signed but not sent) fails the download.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import logging
import re
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelservice_serving import credentials
from modelservice_serving.credentials import CredentialsError
from modelservice_serving.download import DownloadError, DownloadPolicy, download, parse_networks
from modelservice_serving.fetch import ModelDownloadError, fetch_model
from modelservice_serving.s3auth import (
    EMPTY_SHA256,
    S3Keys,
    S3UriError,
    s3_url,
    sign,
    sign_get,
)
from modelservice_serving.train import datasets
from modelservice_serving.train.errors import DatasetDownloadFailedError

pytestmark = pytest.mark.unit

# The S3 documentation's example keys (not a real account).
DOC_KEYS = S3Keys("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
DOC_TIME = datetime(2013, 5, 24, tzinfo=UTC)
DOC_HOST = "examplebucket.s3.amazonaws.com"
SECRET = "FAKEs3cretKEYnotREAL/0123456789abcdefghij"
SESSION = "FAKEsessionTOKENnotREAL"
LOOPBACK_1 = parse_networks("127.0.0.1/32")


def _doc_headers(**extra: str) -> dict[str, str]:
    return {
        "Host": DOC_HOST,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
        **extra,
    }


def _signature(authorization: str) -> str:
    return authorization.rpartition("Signature=")[2]


@pytest.mark.parametrize(
    ("path", "headers", "signature"),
    [
        (
            "/test.txt",
            _doc_headers(Range="bytes=0-9"),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
        (
            "/?lifecycle",
            _doc_headers(),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        ),
        (
            "/?max-keys=2&prefix=J",
            _doc_headers(),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
    ids=["get-object", "get-bucket-lifecycle", "list-objects"],
)
def test_signatures_of_the_s3_documentation(
    path: str, headers: dict[str, str], signature: str
) -> None:
    authorization = sign(DOC_KEYS, "GET", f"https://{DOC_HOST}{path}", headers, DOC_TIME)
    assert _signature(authorization) == signature
    assert authorization.startswith(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
    )


def test_put_object_example_with_a_payload_and_an_encoded_path() -> None:
    payload = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    headers = {
        "Host": DOC_HOST,
        "Date": "Fri, 24 May 2013 00:00:00 GMT",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": payload,
        "x-amz-date": "20130524T000000Z",
    }
    authorization = sign(
        DOC_KEYS,
        "PUT",
        f"https://{DOC_HOST}/test$file.text",
        headers,
        DOC_TIME,
        payload_sha256=payload,
    )
    assert "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class" in (
        authorization
    )
    assert _signature(authorization) == (
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    )


def test_sign_get_matches_the_get_object_example_without_range() -> None:
    signed = sign_get(DOC_KEYS, f"https://{DOC_HOST}/test.txt", DOC_HOST, DOC_TIME)
    assert signed["x-amz-date"] == "20130524T000000Z"
    assert signed["x-amz-content-sha256"] == EMPTY_SHA256
    expected = sign(DOC_KEYS, "GET", f"https://{DOC_HOST}/test.txt", _doc_headers(), DOC_TIME)
    assert signed["Authorization"] == expected
    # A different secret, path, time or region gives another signature.
    others = [
        sign_get(
            S3Keys(DOC_KEYS.access_key_id, "other"),
            f"https://{DOC_HOST}/test.txt",
            DOC_HOST,
            DOC_TIME,
        ),
        sign_get(DOC_KEYS, f"https://{DOC_HOST}/test2.txt", DOC_HOST, DOC_TIME),
        sign_get(DOC_KEYS, f"https://{DOC_HOST}/test.txt", DOC_HOST, DOC_TIME + timedelta(1)),
        sign_get(
            S3Keys(DOC_KEYS.access_key_id, DOC_KEYS.secret_access_key, region="eu-west-1"),
            f"https://{DOC_HOST}/test.txt",
            DOC_HOST,
            DOC_TIME,
        ),
    ]
    assert len({o["Authorization"] for o in others} | {signed["Authorization"]}) == 5


def test_a_session_token_is_sent_and_signed() -> None:
    keys = S3Keys("AKID", SECRET, session_token=SESSION)
    signed = sign_get(
        keys, "https://b.s3.us-east-1.amazonaws.com/k", "b.s3.us-east-1.amazonaws.com"
    )
    assert signed["x-amz-security-token"] == SESSION
    assert "host;x-amz-content-sha256;x-amz-date;x-amz-security-token" in signed["Authorization"]


def test_secrets_are_not_in_any_repr(tmp_path: Path) -> None:
    keys = S3Keys("AKID", SECRET, session_token=SESSION, endpoint="http://store:9000")
    found = credentials.Credentials(headers={"Authorization": "Bearer t0k"}, s3=keys)
    policy = DownloadPolicy(1, headers={"Authorization": "Bearer t0k"}, s3=keys)
    for text in (repr(keys), repr(found), repr(policy)):
        assert SECRET not in text
        assert SESSION not in text
        assert "t0k" not in text
    assert "AKID" in repr(keys)


@pytest.mark.parametrize(
    ("uri", "keys", "url"),
    [
        (
            "s3://models/digits/v3.tgz",
            S3Keys("a", "s"),
            "https://models.s3.us-east-1.amazonaws.com/digits/v3.tgz",
        ),
        (
            "s3://my.models/v3.tgz",
            S3Keys("a", "s", region="eu-west-1"),
            "https://s3.eu-west-1.amazonaws.com/my.models/v3.tgz",
        ),
        (
            "s3://models/a b.tgz",
            S3Keys("a", "s", endpoint="http://minio.store:9000/"),
            "http://minio.store:9000/models/a%20b.tgz",
        ),
    ],
)
def test_s3_uris_become_request_urls(uri: str, keys: S3Keys, url: str) -> None:
    assert s3_url(uri, keys) == url


@pytest.mark.parametrize("uri", ["s3://UPPER/k", "s3://b/", "s3://ab/k", "https://b/k"])
def test_malformed_s3_uris_are_refused(uri: str) -> None:
    with pytest.raises(S3UriError):
        s3_url(uri, S3Keys("a", "s"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"region": "us east"}, "is not an AWS region name"),
        ({"endpoint": "ftp://store"}, "http:// or https:// URL with a host"),
        ({"endpoint": "https://u:p@store"}, "must not carry user info"),
    ],
)
def test_bad_region_or_endpoint_is_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(S3UriError, match=message):
        S3Keys("a", "s", **options)


def _secret_dir(path: Path, **keys: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, value in keys.items():
        (path / name).write_text(value + "\n")
    return path


def test_s3_keys_from_a_mounted_secret(tmp_path: Path) -> None:
    found = credentials.read(
        _secret_dir(
            tmp_path / "full",
            AWS_ACCESS_KEY_ID="AKID",
            AWS_SECRET_ACCESS_KEY=SECRET,
            AWS_SESSION_TOKEN=SESSION,
            AWS_DEFAULT_REGION="eu-central-1",
            AWS_ENDPOINT_URL="https://store.example:9000",
        )
    )
    assert found.headers == {}
    assert found.s3 == S3Keys("AKID", SECRET, SESSION, "eu-central-1", "https://store.example:9000")
    minimal = credentials.read(
        _secret_dir(tmp_path / "min", AWS_ACCESS_KEY_ID="AKID", AWS_SECRET_ACCESS_KEY=SECRET)
    )
    assert minimal.s3 == S3Keys("AKID", SECRET)  # us-east-1, AWS itself
    with pytest.raises(CredentialsError, match="need both AWS_ACCESS_KEY_ID and") as half:
        credentials.read(_secret_dir(tmp_path / "half", AWS_ACCESS_KEY_ID="AKID"))
    assert "AKID" not in str(half.value)
    with pytest.raises(CredentialsError, match="is not an AWS region name"):
        credentials.read(
            _secret_dir(
                tmp_path / "region",
                AWS_ACCESS_KEY_ID="A",
                AWS_SECRET_ACCESS_KEY="S",
                AWS_REGION="../x",
            )
        )


# ---- a fake S3 endpoint on loopback -------------------------------------------------------

OBJECTS: dict[str, bytes] = {}
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/s3/"
    r"aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})$"
)


@dataclass
class _FakeS3:
    url: str
    keys: S3Keys
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, verdict)


def _verify(store: _FakeS3, path: str, headers: http.client.HTTPMessage) -> str:
    """'ok', or why S3 would refuse the request (403)."""
    match = _AUTH.match(headers.get("Authorization", ""))
    if match is None:
        return "no or malformed Authorization"
    if match["key"] != store.keys.access_key_id or match["region"] != store.keys.region:
        return "wrong key id or region"
    if headers.get("x-amz-content-sha256") != EMPTY_SHA256:
        return "no payload hash"
    when = datetime.strptime(headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if abs(datetime.now(UTC) - when) > timedelta(minutes=15):
        return "request time too skewed"
    if store.keys.session_token and headers.get("x-amz-security-token") != store.keys.session_token:
        return "missing session token"
    names = match["signed"].split(";")
    if "host" not in names or any(headers.get(n) is None for n in names):
        return "a signed header was not sent"
    signed = {n: str(headers.get(n)) for n in names}
    expected = sign(store.keys, "GET", f"{store.url}{path}", signed, when)
    return "ok" if _signature(expected) == match["sig"] else "signature mismatch"


@pytest.fixture(scope="module")
def fake_s3() -> Iterator[_FakeS3]:
    store = _FakeS3("", S3Keys("AKIDFAKE", SECRET, SESSION, region="eu-west-1"))

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            verdict = _verify(store, self.path, self.headers)
            store.requests.append((self.path, verdict))
            if verdict != "ok":
                body = f"<Error><Code>SignatureDoesNotMatch</Code><Secret>{SECRET}</Secret></Error>"
                self.send_response(403)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())
                return
            if self.path == "/bucket/moved.csv":  # same host: the next request is re-signed
                self.send_response(307)
                self.send_header("Location", "/bucket/data.csv")
                self.end_headers()
                return
            body = OBJECTS.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield store
    server.shutdown()


def _client_keys(store: _FakeS3, secret: str = SECRET) -> S3Keys:
    return S3Keys(store.keys.access_key_id, secret, SESSION, region="eu-west-1", endpoint=store.url)


CSV = b"a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n"


def _model_tgz() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in (("v3/saved_model.pb", b"pb"), ("v3/variables/x", b"v")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


OBJECTS.update({"/bucket/data.csv": CSV, "/bucket/models/v3.tgz": _model_tgz()})


def test_s3_uri_downloads_with_a_signed_request(fake_s3: _FakeS3, tmp_path: Path) -> None:
    fake_s3.requests.clear()
    policy = DownloadPolicy(1 << 20, 10, LOOPBACK_1, s3=_client_keys(fake_s3))
    fetched = download("s3://bucket/data.csv", tmp_path / "d.csv", policy)
    assert (tmp_path / "d.csv").read_bytes() == CSV
    assert fetched.sha256 == hashlib.sha256(CSV).hexdigest()
    assert fake_s3.requests == [("/bucket/data.csv", "ok")]
    # An http(s) URL of the store is signed the same way.
    download(f"{fake_s3.url}/bucket/data.csv", tmp_path / "e.csv", policy)
    assert fake_s3.requests[-1] == ("/bucket/data.csv", "ok")


def test_a_redirect_on_the_same_host_is_signed_again(fake_s3: _FakeS3, tmp_path: Path) -> None:
    fake_s3.requests.clear()
    policy = DownloadPolicy(1 << 20, 10, LOOPBACK_1, s3=_client_keys(fake_s3))
    download("s3://bucket/moved.csv", tmp_path / "d.csv", policy)
    assert fake_s3.requests == [("/bucket/moved.csv", "ok"), ("/bucket/data.csv", "ok")]


def test_a_wrong_secret_is_refused_and_nothing_is_echoed(fake_s3: _FakeS3, tmp_path: Path) -> None:
    fake_s3.requests.clear()
    policy = DownloadPolicy(1 << 20, 10, LOOPBACK_1, s3=_client_keys(fake_s3, "wrong"))
    with pytest.raises(DownloadError) as failed:
        download("s3://bucket/data.csv", tmp_path / "d.csv", policy)
    message = str(failed.value)
    assert message == f"GET {fake_s3.url}/bucket/data.csv: HTTP 403 Forbidden"
    assert fake_s3.requests == [("/bucket/data.csv", "signature mismatch")]


def test_the_store_address_is_checked_like_any_download(fake_s3: _FakeS3, tmp_path: Path) -> None:
    fake_s3.requests.clear()
    with pytest.raises(DownloadError, match=r"refused: 127\.0\.0\.1 resolves"):
        download(
            "s3://bucket/data.csv",
            tmp_path / "d",
            DownloadPolicy(1 << 20, 10, s3=_client_keys(fake_s3)),
        )
    assert fake_s3.requests == []  # refused before connecting
    with pytest.raises(DownloadError, match="s3:// needs S3-style keys"):
        download("s3://bucket/data.csv", tmp_path / "d", DownloadPolicy(1 << 20, 10, LOOPBACK_1))


def test_model_and_dataset_from_s3_through_the_mounted_secret(
    fake_s3: _FakeS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret_dir = _secret_dir(
        tmp_path / "secret",
        AWS_ACCESS_KEY_ID=fake_s3.keys.access_key_id,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_SESSION_TOKEN=SESSION,
        AWS_REGION="eu-west-1",
        AWS_ENDPOINT_URL=fake_s3.url,
    )
    caplog.set_level(logging.DEBUG)
    model_dir = fetch_model(
        "s3://bucket/models/v3.tgz",
        tmp_path / "cache",
        1 << 20,
        10,
        allowed_networks="127.0.0.1/32",
        credentials_dir=secret_dir,
    )
    assert (model_dir / "saved_model.pb").read_bytes() == b"pb"
    found = credentials.read(secret_dir)
    policy = DownloadPolicy(1 << 20, 10, LOOPBACK_1, s3=found.s3)
    data = datasets.load("s3://bucket/data.csv", download_policy=policy)
    assert data.features.shape == (4, 2)
    with pytest.raises(ModelDownloadError) as missing:
        fetch_model(
            "s3://bucket/models/none.tgz",
            tmp_path / "cache",
            1 << 20,
            10,
            allowed_networks="127.0.0.1/32",
            credentials_dir=secret_dir,
        )
    assert "HTTP 404 Not Found" in str(missing.value)
    with pytest.raises(DatasetDownloadFailedError, match="s3:// needs S3-style keys"):
        datasets.load(
            "s3://bucket/data.csv", download_policy=DownloadPolicy(1 << 20, 10, LOOPBACK_1)
        )
    logged = caplog.text + str(missing.value)
    assert SECRET not in logged
    assert SESSION not in logged

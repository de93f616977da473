"""HTTP/2 pieces of the event loop's gRPC server (``http2.py``): HPACK decoding against
RFC 7541's own examples, its table and its cache of repeated blocks, and frame heads."""

from __future__ import annotations

import pytest

from modelservice_serving import http2

pytestmark = pytest.mark.unit

FIRST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
         (b":authority", b"www.example.com")]  # fmt: skip
SECOND = [*FIRST, (b"cache-control", b"no-cache")]
THIRD = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
         (b":authority", b"www.example.com"), (b"custom-key", b"custom-value")]  # fmt: skip

# RFC 7541, appendix C.3 (plain literals) and C.4 (the same requests, Huffman coded).
PLAIN = [
    "828684410f7777772e6578616d706c652e636f6d",
    "828684be58086e6f2d6361636865",
    "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
]
HUFFMAN = [
    "828684418cf1e3c2e5f23a6ba0ab90f4ff",
    "828684be5886a8eb10649cbf",
    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
]


@pytest.mark.parametrize("blocks", [PLAIN, HUFFMAN], ids=["plain", "huffman"])
def test_rfc_7541_request_examples(blocks: list[str]) -> None:
    decoder = http2.HpackDecoder()
    assert [decoder.decode(bytes.fromhex(block)) for block in blocks] == [FIRST, SECOND, THIRD]
    # The dynamic table as the RFC shows it after the third request (newest first).
    assert decoder._entries == [
        (b"custom-key", b"custom-value"),
        (b"cache-control", b"no-cache"),
        (b":authority", b"www.example.com"),
    ]
    assert decoder._size == 164


def test_a_repeated_block_is_remembered_until_the_table_changes() -> None:
    decoder = http2.HpackDecoder()
    decoder.decode(bytes.fromhex(PLAIN[0]))  # adds :authority (index 62)
    indexed = bytes.fromhex("8286 84be".replace(" ", ""))  # all indexed: no table change
    assert decoder.decode(indexed) == FIRST
    assert indexed in decoder._known
    assert decoder.decode(indexed) is decoder.decode(indexed)
    # A block that adds to the table shifts index 62: what was remembered is forgotten.
    decoder.decode(bytes.fromhex(PLAIN[1]))
    assert decoder._known == {}
    assert decoder.decode(indexed)[-1] == (b"cache-control", b"no-cache")


def test_table_size_updates_evict_and_bad_blocks_are_connection_errors() -> None:
    decoder = http2.HpackDecoder()
    decoder.decode(bytes.fromhex(PLAIN[0]))
    decoder.decode(b"\x20")  # size update to 0: the table empties
    assert decoder._entries == []
    with pytest.raises(http2.Http2Error) as index:
        decoder.decode(b"\xbe")  # index 62: nothing there now
    assert index.value.code == http2.COMPRESSION_ERROR
    with pytest.raises(http2.Http2Error):
        decoder.decode(b"\x3f\xe2\x1f")  # a size update to 4,097: past the 4,096 allowed
    with pytest.raises(http2.Http2Error):
        decoder.decode(bytes.fromhex(PLAIN[0])[:-3])  # cut short
    big = http2.HpackDecoder(max_list_size=100)
    with pytest.raises(http2.Http2Error) as large:
        big.decode(http2.literal(b"x-a", b"v" * 100))
    assert large.value.code == http2.ENHANCE_YOUR_CALM


def test_our_literals_decode_and_frames_round_trip() -> None:
    block = http2.STATUS_200 + http2.GRPC_CONTENT_TYPE + http2.literal(b"grpc-status", b"0")
    assert http2.HpackDecoder().decode(block) == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"0"),
    ]
    long_value = b"y" * 300  # a length past the 7-bit prefix
    assert http2.HpackDecoder().decode(http2.literal(b"x", long_value)) == [(b"x", long_value)]
    frame = http2.frame(http2.HEADERS, http2.END_HEADERS, 2**31 - 1, b"abc")
    assert http2.read_head(frame, 0) == (3, http2.HEADERS, http2.END_HEADERS, 2**31 - 1)
    assert http2.percent_encoded("bad 100% é\n") == b"bad 100%25 %C3%A9%0A"

"""The parts of HTTP/2 a gRPC server needs: frames, HPACK decoding, gRPC's heads and trailers.

Written for the event loop's gRPC server (:mod:`.grpc_loop`) rather than taken from
``h2``: that library's state machine costs more per call than the whole inference does.
HPACK decoding follows RFC 7541 with the dynamic table, Huffman strings (decoded by the
``hpack`` package's table) and size updates; a block of indexed fields, what clients send
once their headers are in the table, is a loop of table lookups. Our own header blocks are
literals without indexing, so the peer's tables never depend on ours.
"""

from __future__ import annotations

import struct
from typing import Final

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113, section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
# Flags.
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Settings.
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 4, 5, 6
# Error codes.
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 6, 7, 8, 9
ENHANCE_YOUR_CALM = 11

DEFAULT_WINDOW: Final = 65_535
DEFAULT_MAX_FRAME: Final = 16_384
MAX_WINDOW: Final = 2**31 - 1

_HEAD = struct.Struct("!HBBBL")  # length (24 bits: 16 + 8), type, flags, stream id
_STATIC = HeaderTable.STATIC_TABLE  # 61 (name, value) pairs, index 1 first
_STATIC_COUNT = len(_STATIC)


class Http2Error(Exception):
    """A connection error: answered with GOAWAY(``code``) and the connection closed."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame, head and payload."""
    length = len(payload)
    return _HEAD.pack(length >> 8, length & 0xFF, kind, flags, stream) + payload


def read_head(buffer: bytes | bytearray, offset: int) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id) of the frame head at ``offset``."""
    high, low, kind, flags, stream = _HEAD.unpack_from(buffer, offset)
    return (high << 8) | low, kind, flags, stream & 0x7FFFFFFF


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(
        SETTINGS, 0, 0, b"".join(struct.pack("!HL", key, value) for key, value in values.items())
    )


def parse_settings(payload: bytes) -> dict[int, int]:
    if len(payload) % 6:
        raise Http2Error(FRAME_SIZE_ERROR, "SETTINGS length is not a multiple of 6")
    return dict(struct.iter_unpack("!HL", payload))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack("!L", increment))


def goaway(last_stream: int, code: int, message: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack("!LL", last_stream, code) + message)


def rst_stream(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack("!L", code))


# -- HPACK encoding of what we send: literals without indexing, never Huffman.
def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """``name: value`` as a literal without indexing, with a new name."""
    return b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value


def literal_indexed_name(index: int, value: bytes) -> bytes:
    """A literal without indexing whose name is static table entry ``index``."""
    return _integer(index, 4, 0) + _integer(len(value), 7, 0) + value


STATUS_200: Final = b"\x88"  # indexed: static entry 8, ":status: 200"
GRPC_CONTENT_TYPE: Final = literal_indexed_name(31, b"application/grpc")  # 31: content-type


def percent_encoded(message: str) -> bytes:
    """gRPC's ``grpc-message`` encoding: printable ASCII but ``%`` as is, the rest %XX."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


# -- HPACK decoding.
# Blocks remembered per connection (each up to the header list limit).
_CACHED_BLOCKS = 32


class HpackDecoder:
    """RFC 7541 decoding with a dynamic table of at most ``max_table_size`` bytes.

    A client repeats the same header block call after call (all indexed, or literals it
    does not index), so a block that left the table as it was is remembered with its
    headers until the table next changes: decoding it again is one dictionary lookup.
    """

    def __init__(self, max_table_size: int = 4096, max_list_size: int = 16_384) -> None:
        self._entries: list[tuple[bytes, bytes]] = []  # newest first (index 62)
        self._size = 0
        self._max_size = max_table_size
        self._limit = max_table_size  # what SETTINGS_HEADER_TABLE_SIZE allows
        self._max_list_size = max_list_size
        self._changes = 0  # table changes so far
        self._known: dict[bytes, list[tuple[bytes, bytes]]] = {}

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The block's headers (the caller must not change the list)."""
        known = self._known.get(block)
        if known is not None:
            return known
        changes = self._changes
        headers = self._decode(block)
        if self._changes != changes:
            self._known.clear()  # indices now point elsewhere
        elif len(self._known) < _CACHED_BLOCKS:
            self._known[block] = headers
        return headers

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        position = 0
        end = len(block)
        list_size = 0
        try:
            while position < end:
                byte = block[position]
                if byte & 0x80:  # indexed field
                    if byte != 0xFF:
                        index = byte & 0x7F
                        position += 1
                    else:
                        index, position = self._integer(block, position, 7)
                    pair = self._lookup(index)
                elif byte & 0x40:  # literal, added to the table
                    pair, position = self._literal(block, position, 6)
                    self._add(pair)
                elif byte & 0x20:  # table size update
                    size, position = self._integer(block, position, 5)
                    if size > self._limit:
                        raise Http2Error(COMPRESSION_ERROR, "table size above the limit")
                    self._max_size = size
                    self._changes += 1
                    self._evict()
                    continue
                else:  # literal without indexing (0000) or never indexed (0001)
                    pair, position = self._literal(block, position, 4)
                list_size += len(pair[0]) + len(pair[1]) + 32
                if list_size > self._max_list_size:
                    raise Http2Error(ENHANCE_YOUR_CALM, "header list too large")
                headers.append(pair)
        except IndexError as exc:
            raise Http2Error(COMPRESSION_ERROR, "truncated header block") from exc
        return headers

    def _lookup(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC[index - 1]
        dynamic = index - _STATIC_COUNT - 1
        if index == 0 or dynamic >= len(self._entries):
            raise Http2Error(COMPRESSION_ERROR, f"header index {index} out of range")
        return self._entries[dynamic]

    def _literal(self, block: bytes, position: int, prefix: int) -> tuple[tuple[bytes, bytes], int]:
        index, position = self._integer(block, position, prefix)
        if index:
            name = self._lookup(index)[0]
        else:
            name, position = self._string(block, position)
        value, position = self._string(block, position)
        return (name, value), position

    @staticmethod
    def _integer(block: bytes, position: int, prefix: int) -> tuple[int, int]:
        limit = (1 << prefix) - 1
        value = block[position] & limit
        position += 1
        if value < limit:
            return value, position
        shift = 0
        while True:
            byte = block[position]
            position += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, position
            if shift > 28:
                raise Http2Error(COMPRESSION_ERROR, "integer too large")

    def _string(self, block: bytes, position: int) -> tuple[bytes, int]:
        huffman = block[position] & 0x80
        length, position = self._integer(block, position, 7)
        end = position + length
        if end > len(block):
            raise Http2Error(COMPRESSION_ERROR, "truncated string")
        raw = block[position:end]
        if huffman:
            try:
                raw = decode_huffman(raw)
            except Exception as exc:  # hpack's own decoding error
                raise Http2Error(COMPRESSION_ERROR, "bad Huffman string") from exc
        return raw, end

    def _add(self, pair: tuple[bytes, bytes]) -> None:
        self._changes += 1
        size = len(pair[0]) + len(pair[1]) + 32
        if size > self._max_size:  # larger than the table: it empties the table
            self._entries.clear()
            self._size = 0
            return
        self._entries.insert(0, pair)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max_size and self._entries:
            name, value = self._entries.pop()
            self._size -= len(name) + len(value) + 32

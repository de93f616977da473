"""Request values converted to arrays by the batch, not by each request.

Turning one small request's JSON values into a checked array costs more than the rest of
its decoding: four NumPy calls (``asarray``, ``astype``, ``isfinite``, ``all``) at about
2 to 3 µs each whatever the size, about 10 µs for one 64-value row, measured. A
:class:`DeferredTensor` keeps the parsed values instead, and the batch converts the rows of
all its requests at once (:func:`merged_array`), with the same checks on the merged array
as :func:`.payloads.to_array` makes. When the merged rows fail a check, each request's own
values are converted on their own (:meth:`DeferredTensor.array`, exactly the eager path),
so a bad request still gets its own 4xx with its own message and the others run; nothing
reaches the model unchecked.

Deferred only where no per-value scan is needed: a float datatype (integers need range
checks per request) and a body without a ``true``/``false`` literal (NumPy would take
booleans mixed into numbers as 1 and 0). Raw little-endian bytes (gRPC's
``raw_input_contents``) are deferred too: the batch joins them and reads one array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import binary, payloads
from .model import DATATYPES, TensorSpec

DEFERRABLE = frozenset({"FP16", "FP32", "FP64"})
_DTYPES = {datatype: np.dtype(DATATYPES[datatype]) for datatype in DEFERRABLE}

Array = npt.NDArray[Any]


class DeferredTensor:
    """One input of one request: parsed, its row count known, not yet an array.

    ``values`` is a list of rows (V1: ``instances`` or columnar ``inputs``), or, when
    ``row_size`` is set, the flat values of a V2 tensor of shape ``[rows, *tail]``, or
    their raw little-endian bytes (``row_size`` then counts bytes).
    """

    __slots__ = ("row_size", "rows", "spec", "tail", "values", "what")

    def __init__(
        self,
        values: list[Any] | bytes,
        rows: int,
        spec: TensorSpec,
        what: str,
        *,
        row_size: int | None = None,
        tail: tuple[int, ...] = (),
    ) -> None:
        self.values = values
        self.rows = rows
        self.spec = spec
        self.what = what
        self.row_size = row_size
        self.tail = tail

    def rows_of(self, start: int, stop: int) -> list[Any] | bytes:
        """The values of rows ``[start, stop)``, in this tensor's layout."""
        size = self.row_size
        if size is None:
            return self.values[start:stop]
        return self.values[start * size : stop * size]

    def array(self) -> Array:
        """This request's values alone, converted and checked as the eager path does (its
        4xx if they are wrong)."""
        if isinstance(self.values, bytes):
            shape = (self.rows, *self.tail)
            return binary.from_bytes(self.values, self.spec, shape, self.what)
        array = payloads.to_array(self.values, self.spec, self.what, booleans_possible=False)
        if self.row_size is None:
            payloads.check_shape(array, self.spec, self.what)
            return array
        return payloads.reshaped(array, [self.rows, *self.tail], self.what)


def merged_array(parts: list[tuple[DeferredTensor, int, int]]) -> Array | None:
    """Rows ``[start, stop)`` of each tensor, one array in order; None when the merged
    values fail a check (or the parts are not laid out alike): then convert each alone."""
    first = parts[0][0]
    in_bytes = isinstance(first.values, bytes)
    layout = (first.row_size, first.tail, first.spec, in_bytes)
    pieces = []
    rows = 0
    for tensor, start, stop in parts:
        if (tensor.row_size, tensor.tail, tensor.spec, isinstance(tensor.values, bytes)) != layout:
            return None
        pieces.append(tensor.rows_of(start, stop))
        rows += stop - start
    if in_bytes:
        return _merged_bytes(first, pieces, rows)  # type: ignore[arg-type]  # bytes, by layout
    values: list[Any] = []
    for piece in pieces:
        values += piece
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError, OverflowError):  # ragged, or nested past 64 dims
        return None
    if raw.dtype.kind not in "iuf":  # strings, nulls, booleans alone: each request's 422
        return None
    spec = first.spec
    with np.errstate(over="ignore", invalid="ignore"):  # caught by the finiteness check
        array = raw.astype(_DTYPES[spec.datatype], copy=False)
    if not np.isfinite(array).all():
        return None
    if first.row_size is not None:
        if array.ndim != 1 or array.size != rows * first.row_size:
            return None
        return array.reshape(rows, *first.tail)
    expected = spec.shape
    shape = array.shape
    if len(shape) != len(expected) or shape[0] != rows:
        return None
    for got, want in zip(shape[1:], expected[1:], strict=True):
        if want != -1 and got != want:
            return None
    return array


def _merged_bytes(first: DeferredTensor, pieces: list[bytes], rows: int) -> Array | None:
    """Raw rows joined and read as one array (sizes were checked per request)."""
    dtype = binary.WIRE_DTYPES[first.spec.datatype]
    array = np.frombuffer(b"".join(pieces), dtype).reshape(rows, *first.tail)
    if not np.isfinite(array).all():
        return None
    return array

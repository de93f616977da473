"""Tensors as raw bytes: gRPC's raw contents and the HTTP binary tensor data extension.

Both carry a tensor as its elements in row-major order, little-endian, without padding, and
its shape beside it. The shape is checked against the model's signature (rank first, then
each size) before anything is allocated, and the byte count must match the shape exactly:
a declared shape can never make the server allocate more than the bytes that arrived.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidInputError
from .model import DATATYPES, TensorSpec

# The wire's byte order, whatever the machine's.
WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(scalar).newbyteorder("<") for name, scalar in DATATYPES.items()
}


def checked_shape(shape: Sequence[int], spec: TensorSpec, what: str) -> tuple[int, ...]:
    """``shape`` when it fits the signature (``-1`` there is any size) and has rows."""
    if len(shape) != len(spec.shape) or any(
        dim < 0 or (want != -1 and dim != want) for dim, want in zip(shape, spec.shape, strict=True)
    ):
        shown = list(shape) if len(shape) <= len(spec.shape) + 2 else f"of rank {len(shape)}"
        raise InvalidInputError(
            f"{what} has shape {shown}; input {spec.name!r} expects {list(spec.shape)} (-1 = any)"
        )
    if shape[0] == 0:
        raise InvalidInputError(f"{what} holds no rows")
    return tuple(shape)


def wire_dtype(spec: TensorSpec, what: str) -> np.dtype[Any]:
    dtype = WIRE_DTYPES.get(spec.datatype)
    if dtype is None:
        raise InvalidInputError(f"{what}: datatype {spec.datatype} cannot travel as raw bytes")
    return dtype


def from_bytes(raw: bytes, spec: TensorSpec, shape: tuple[int, ...], what: str) -> npt.NDArray[Any]:
    """The array ``raw`` holds for a ``shape`` already checked by :func:`checked_shape`."""
    dtype = wire_dtype(spec, what)
    needed = math.prod(shape) * dtype.itemsize
    if len(raw) != needed:
        raise InvalidInputError(
            f"{what} has {len(raw)} bytes; shape {list(shape)} of {spec.datatype} needs {needed}"
        )
    array = np.frombuffer(raw, dtype).reshape(shape)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInputError(f"{what} holds non-finite numbers (NaN or infinity)")
    return array


def to_bytes(array: npt.NDArray[Any], datatype: str) -> bytes:
    """The array's elements as the wire carries them."""
    return np.ascontiguousarray(array, dtype=WIRE_DTYPES[datatype]).tobytes()

"""Values converted by the batch (``deferred.py``): one conversion for the batch's rows,
and a bad request among good ones still gets its own 4xx while the others are served."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from modelservice_serving.deferred import DeferredTensor, merged_array
from modelservice_serving.errors import InvalidInputError
from modelservice_serving.model import TensorSpec

from .conftest import MODEL_NAME

pytestmark = pytest.mark.unit

SPEC = TensorSpec("inputs", "FP32", (-1, 4))
ROW = [1.0, 2, 3.5, -4.0]


def _rows(values: list[Any]) -> DeferredTensor:
    return DeferredTensor(values, len(values), SPEC, "'instances'")


def _flat(values: list[Any], rows: int) -> DeferredTensor:
    return DeferredTensor(values, rows, SPEC, "input 'inputs'", row_size=4, tail=(4,))


def test_merged_rows_are_one_array_of_the_slices_in_order() -> None:
    first, second = _rows([ROW, [5.0] * 4, [6.0] * 4]), _flat([7.0] * 4 + [8.0] * 4, 2)
    merged = merged_array([(first, 1, 3), (_rows([ROW]), 0, 1)])
    assert merged is not None
    assert merged.dtype == np.float32
    assert merged.tolist() == [[5.0] * 4, [6.0] * 4, ROW]
    flat = merged_array([(second, 1, 2), (_flat(ROW, 1), 0, 1)])
    assert flat is not None
    assert flat.shape == (2, 4)
    assert flat.tolist() == [[8.0] * 4, ROW]


@pytest.mark.parametrize(
    "bad",
    [
        [1.0, 2.0, 3.0],  # ragged
        [1.0, 2.0, 3.0, "4"],  # a string that NumPy would read as a number
        [1.0, 2.0, 3.0, None],
        [1.0, 2.0, 3.0, 1e39],  # beyond FP32
        [[1.0], 2.0, 3.0, 4.0],  # nested
        [1.0, 2.0, 3.0, 4.0, 5.0],  # a wrong fixed dimension
    ],
)
def test_a_bad_row_fails_the_merge_and_alone_gets_its_own_error(bad: list[Any]) -> None:
    good, wrong = _rows([ROW]), _rows([bad])
    assert merged_array([(good, 0, 1), (wrong, 0, 1)]) is None
    assert good.array().tolist() == [ROW]
    with pytest.raises(InvalidInputError, match="'instances'"):
        wrong.array()


def test_parts_of_different_layouts_are_not_merged() -> None:
    assert merged_array([(_rows([ROW]), 0, 1), (_flat(ROW, 1), 0, 1)]) is None


async def test_a_bad_request_batched_with_good_ones_is_refused_alone(server_factory: Any) -> None:
    v1 = f"/v1/models/{MODEL_NAME}:predict"
    v2 = f"/v2/models/{MODEL_NAME}/infer"
    good = {"instances": [[0.5] * 64]}
    good_v2 = {"inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32",
                           "data": [0.5] * 64}]}  # fmt: skip
    bad = {"instances": [[0.5] * 63 + ["1"]]}
    bad_v2 = {"inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32",
                          "data": [0.5] * 63 + [None]}]}  # fmt: skip
    # One batch of all eight (the latency window is long, the batch holds exactly 8).
    with server_factory(max_batch_size=8, max_latency_ms=2000) as server:
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
            responses = await asyncio.gather(
                *(http.post(v1, json=good) for _ in range(3)),
                http.post(v1, json=bad),
                *(http.post(v2, json=good_v2) for _ in range(3)),
                http.post(v2, json=bad_v2),
            )
    statuses = [response.status_code for response in responses]
    assert statuses == [200, 200, 200, 422, 200, 200, 200, 422]
    assert "'instances' must hold numbers" in responses[3].json()["error"]
    assert "input 'inputs'" in responses[7].json()["error"]
    predictions = [response.json()["predictions"][0] for response in responses[:3]]
    assert predictions[0] == predictions[1] == predictions[2]
    assert len(responses[4].json()["outputs"][0]["data"]) == 10
    assert sum(server.counter.batches) == 6  # the model never saw the bad rows

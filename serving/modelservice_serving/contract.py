"""The one home of the contract between training code, the model server and the operator.

What a training container prints and leaves behind (epoch lines, the result in its
termination message), the failure reasons and the server's failure prefixes, the
environment the operator gives a training pod, and the defaults both sides share. The
trainer, the server and the operator all import this module; see ``docs/contracts.md``.

Standard library and pydantic only: the operator's image installs this module without
TensorFlow, NumPy or the server's dependencies (a unit test checks the imports).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_LATENCY_MS",
    "ENV_BATCH_SIZE",
    "ENV_DATASET",
    "ENV_EPOCHS",
    "ENV_JOB_COMPLETION_INDEX",
    "ENV_LEARNING_RATE",
    "ENV_OUTPUT",
    "ENV_POD_IP",
    "ENV_TERMINATION_LOG",
    "ENV_VERSION",
    "ENV_WORKER_HOSTS",
    "ENV_WORKER_RENDEZVOUS",
    "GRPC_PORT",
    "HTTP_PORT",
    "MAX_MESSAGE_BYTES",
    "SERVER_FAILURE_PREFIXES",
    "TERMINATION_LOG",
    "WORKER_PORT",
    "EpochEvent",
    "Failed",
    "ServerFailure",
    "Succeeded",
    "TrainingFailure",
    "TrainingResult",
    "completed_line",
    "datatype_of",
    "parse_epoch",
    "parse_result",
    "parse_server_failure",
    "result_json",
    "server_failure_line",
]

# --- shared defaults -------------------------------------------------------------------------
HTTP_PORT = 8080
GRPC_PORT = 8081  # the Open Inference Protocol over gRPC (serve --grpc-port)
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_LATENCY_MS = 5
DEFAULT_BATCH_SIZE = 32
# The container's termination message file; Kubernetes keeps at most 4096 bytes of it.
TERMINATION_LOG = "/dev/termination-log"
MAX_MESSAGE_BYTES = 4000
# Port of the TensorFlow collective service of each worker of a multi-worker Job.
WORKER_PORT = 2222

# --- the environment of a training container -------------------------------------------------
# The operator sets these on every training pod, built-in or user code alike.
ENV_OUTPUT = "MSO_OUTPUT"  # the version directory to write, e.g. /models/v3
ENV_VERSION = "MSO_VERSION"  # the version number, e.g. 3
ENV_TERMINATION_LOG = "MSO_TERMINATION_LOG"  # where the result message goes
# The directory holding the files of spec.training.datasetCredentials, when given.
ENV_DATASET_CREDENTIALS_DIR = "MSO_DATASET_CREDENTIALS_DIR"
ENV_DATASET = "MSO_DATASET"  # spec.training.dataset, a name or a URI
# Hyperparameters of spec.training, for code that wants them (the built-in trainer's flags).
ENV_EPOCHS = "MSO_EPOCHS"
ENV_BATCH_SIZE = "MSO_BATCH_SIZE"
ENV_LEARNING_RATE = "MSO_LEARNING_RATE"
# Multi-worker Jobs: every worker's host:port, comma separated, in index order; the Indexed
# Job's controller sets the index.
ENV_WORKER_HOSTS = "MSO_WORKER_HOSTS"
# Where pods cannot resolve those names (no cluster DNS), workers meet through this directory
# on the shared store, each announcing its pod IP.
ENV_WORKER_RENDEZVOUS = "MSO_WORKER_RENDEZVOUS"
ENV_POD_IP = "MSO_POD_IP"
ENV_JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"


# --- tensors --------------------------------------------------------------------------------
# Open Inference Protocol datatypes by TensorFlow/NumPy dtype name: the trainer writes them into
# metadata.json, the server answers V2 metadata with them.
_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}


def datatype_of(dtype_name: str) -> str:
    """Open Inference Protocol datatype of a TensorFlow/NumPy dtype name."""
    return _DATATYPES.get(dtype_name, dtype_name.upper())


# --- failure reasons -------------------------------------------------------------------------
class TrainingFailure(StrEnum):
    """``reason`` of a failed training result."""

    INVALID_SETTINGS = "InvalidSettings"
    DATASET_NOT_FOUND = "DatasetNotFound"
    UNSUPPORTED_DATASET = "UnsupportedDataset"
    DATASET_DOWNLOAD_FAILED = "DatasetDownloadFailed"
    LABEL_COLUMN_MISSING = "LabelColumnMissing"
    SHAPE_MISMATCH = "ShapeMismatch"
    OUTPUT_EXISTS = "OutputExists"
    OUTPUT_NOT_WRITABLE = "OutputNotWritable"
    TRAINING_FAILED = "TrainingFailed"
    INTERNAL_ERROR = "InternalError"


class ServerFailure(StrEnum):
    """First word of the server's one-line termination message when the model cannot load."""

    MODEL_DOWNLOAD_FAILED = "ModelDownloadFailed"
    MODEL_LOAD_FAILED = "ModelLoadFailed"


SERVER_FAILURE_PREFIXES = tuple(f"{reason}: " for reason in ServerFailure)
_SERVER_LINE_CHARS = 2000


def server_failure_line(reason: ServerFailure, message: str) -> str:
    """``ModelDownloadFailed: <one line>``, as the server writes it."""
    return " ".join(f"{reason}: {message}".split())[:_SERVER_LINE_CHARS]


def parse_server_failure(text: str | None) -> tuple[str, str] | None:
    """``(reason, message)`` of a server failure line, None for anything else."""
    said = (text or "").strip()
    if not said.startswith(SERVER_FAILURE_PREFIXES):
        return None
    reason, _, message = said.partition(": ")
    return reason, message


# --- messages --------------------------------------------------------------------------------
class _Message(BaseModel):
    # Unknown fields are ignored: an older operator reads a newer trainer's messages.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    def wire(self, *, as_given: bool = False) -> dict[str, Any]:
        """camelCase JSON form; ``as_given``: only the fields the message carried."""
        body = self.model_dump(
            by_alias=True, exclude_none=True, exclude_unset=as_given, mode="json"
        )
        if hasattr(self, "status"):
            body["status"] = self.status
        return body


class EpochEvent(_Message):
    """One progress line per epoch on stdout; the operator tails it into ``status.training``."""

    event: Literal["epoch"] = "epoch"
    epoch: int = Field(ge=1)
    epochs: int | None = Field(None, ge=1)
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None

    def line(self) -> str:
        return json.dumps(self.wire())


class Succeeded(_Message):
    """The result of a run that published its version."""

    status: Literal["Succeeded"] = "Succeeded"
    version: int | None = None
    uri: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    trained_at: str | None = Field(None, alias="trainedAt")
    # Lineage: where the version came from (the URI redacted), for status.versions.
    dataset_uri: str | None = Field(None, alias="datasetUri")
    dataset_sha256: str | None = Field(None, alias="datasetSha256")
    hyperparameters: dict[str, Any] | None = None


class Failed(_Message):
    """The result of a run that failed; ``reason`` is a :class:`TrainingFailure` or the user's."""

    status: Literal["Failed"] = "Failed"
    reason: str
    message: str | None = None
    # OutputExists: the highest version the store holds, so the operator picks a free number.
    highest_version: int | None = Field(None, alias="highestVersion")


TrainingResult = Annotated[Succeeded | Failed, Field(discriminator="status")]
_RESULT: TypeAdapter[Succeeded | Failed] = TypeAdapter(TrainingResult)


def result_json(result: Succeeded | Failed) -> str:
    """Compact JSON under :data:`MAX_MESSAGE_BYTES` (a long failure message is cut)."""
    body = result.wire()
    text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) > MAX_MESSAGE_BYTES and isinstance(result, Failed) and result.message:
        overflow = len(text.encode()) - MAX_MESSAGE_BYTES + 3
        body["message"] = result.message.encode()[:-overflow].decode(errors="ignore") + "..."
        text = json.dumps(body, separators=(",", ":"))
    return text


def completed_line(result: Succeeded) -> str:
    """The last stdout line of a successful run: ``{"event": "completed", ...}``."""
    return json.dumps({"event": "completed", **result.wire()})


def parse_result(text: str | None) -> Succeeded | Failed | None:
    """The result in a termination message, None when there is none.

    With ``terminationMessagePolicy: FallbackToLogsOnError`` the message of a crash is the
    log's tail: the last line that is a result wins.
    """
    if not text or not text.strip():
        return None
    # The whole message first (a result printed alone), then each line from the end.
    for value in _json_objects([text.strip(), *reversed(text.strip().splitlines())]):
        if "status" not in value:
            continue
        try:
            return _RESULT.validate_python(value)
        except ValidationError:
            continue
    return None


def parse_epoch(log: str | None) -> EpochEvent | None:
    """The last epoch line of a training log, None when there is none."""
    for value in _json_objects(reversed((log or "").splitlines())):
        if value.get("event") == "epoch":
            try:
                return EpochEvent.model_validate(value)
            except ValidationError:
                continue
    return None


def _json_objects(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects among ``lines``, in their order; other lines are skipped."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value

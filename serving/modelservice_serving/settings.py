"""Settings for both entrypoints, read from command-line flags and ``MSO_*`` variables.

Every field is a flag (``--max-batch-size``) and an environment variable
(``MSO_MAX_BATCH_SIZE``); a flag wins over the variable, the variable over the default.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import contract

ENV_PREFIX = "MSO_"


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)


class TrainSettings(_Settings):
    """Hyperparameters and paths of one training run."""

    dataset: str = Field(
        "digits", description="digits | mnist | fashion_mnist | a path or URI to .csv/.npz"
    )
    label_column: str = Field("label", description="label column (CSV) or array (NPZ)")
    epochs: int = Field(5, ge=1, description="training epochs")
    batch_size: int = Field(contract.DEFAULT_BATCH_SIZE, ge=1, description="batch size per replica")
    learning_rate: float = Field(0.001, gt=0, description="Adam learning rate")
    hidden_units: Annotated[tuple[int, ...], NoDecode] = Field(
        (128, 128), description="units of the hidden Dense layers, comma separated"
    )
    validation_split: float = Field(0.1, ge=0, lt=1, description="share of data for validation")
    test_split: float = Field(0.2, gt=0, lt=1, description="share of data held out for test")
    seed: int | None = Field(None, description="seed for a deterministic run")
    output: Path = Field(description="the new version directory to write the model into")
    version: int | None = Field(None, description="model version (default: from DIR's vN name)")
    termination_log: Path = Field(
        Path(contract.TERMINATION_LOG), description="where the result JSON is written"
    )
    download_timeout_s: float = Field(
        600.0, gt=0, description="total deadline of the dataset download, redirects included"
    )
    download_allow_networks: str = Field(
        "",
        description="CIDRs a download may reach although inside the cluster or host "
        "(loopback, link-local, private); comma separated, empty refuses them all",
    )
    dataset_max_bytes: int = Field(
        1 << 30, ge=1, description="largest dataset file a download may write"
    )
    dataset_credentials_dir: Path | None = Field(
        None, description="mounted Secret with the download's credentials (see credentials.py)"
    )

    @field_validator("hidden_units", mode="before")
    @classmethod
    def _split_units(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if not parts:
                raise ValueError("needs at least one layer size, e.g. 128,128")
            return tuple(int(part) for part in parts)
        return value

    @field_validator("hidden_units")
    @classmethod
    def _positive_units(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(units <= 0 for units in value):
            raise ValueError("every hidden layer needs a positive number of units")
        return value


class ServeSettings(_Settings):
    """How the model server listens, batches and shuts down."""

    model_dir: Path | None = Field(None, description="a version directory written by `train`")
    model_uri: str | None = Field(
        None, description="http(s):// URI of a .tar.gz/.tgz/.zip of a version directory"
    )
    model_cache_dir: Path = Field(
        Path("/var/cache/models"), description="writable directory --model-uri downloads into"
    )
    model_max_bytes: int = Field(
        1 << 30, ge=1, description="largest model archive, and largest unpacked model"
    )
    download_timeout_s: float = Field(
        600.0, gt=0, description="total deadline of the model download, redirects included"
    )
    download_allow_networks: str = Field(
        "",
        description="CIDRs a download may reach although inside the cluster or host "
        "(loopback, link-local, private); comma separated, empty refuses them all",
    )
    model_max_entries: int = Field(
        10_000, ge=1, description="most files and directories in a model archive"
    )
    model_credentials_dir: Path | None = Field(
        None, description="mounted Secret with the download's credentials (see credentials.py)"
    )
    termination_log: Path | None = Field(
        None, description="where a load failure is written as one line (e.g. /dev/termination-log)"
    )
    model_name: str = Field("model", description="the name clients address the model by")
    host: str = Field("0.0.0.0", description="address to bind")
    port: int = Field(contract.HTTP_PORT, ge=0, le=65535, description="port to bind")
    grpc_port: int = Field(
        contract.GRPC_PORT,
        ge=0,
        le=65535,
        description="gRPC port (Open Inference Protocol); 0 = any free",
    )
    max_batch_size: int = Field(
        contract.DEFAULT_MAX_BATCH_SIZE, ge=1, description="most rows merged into one model call"
    )
    max_latency_ms: float = Field(
        float(contract.DEFAULT_MAX_LATENCY_MS), ge=0, description="longest wait to fill a batch"
    )
    inline_model_below_ms: float = Field(
        0.5,
        ge=0,
        description="call the model on the event loop while its calls take less than this "
        "(cheaper than a thread hop); 0: always on its own thread",
    )
    max_queue: int = Field(1024, ge=1, description="most rows waiting; beyond that 503")
    max_body_bytes: int = Field(1 << 20, ge=1, description="largest request body; beyond 413")
    max_header_bytes: int = Field(
        16384, ge=1024, description="largest request line plus headers; beyond that 431"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request's line and headers must arrive within this; else 408"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="a request's body must arrive within this after its head"
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="an idle keep-alive connection is closed after this"
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="open connections; beyond that the longest-idle one is closed (or 503); "
        "capped by the open-file limit",
    )
    max_in_flight: int = Field(
        256, ge=1, description="requests being read or answered; beyond that 503 at once"
    )
    grpc_server: Literal["loop", "grpcio"] = Field(
        "loop",
        description="what serves gRPC: this server's event loop (HTTP/2 in Python, several "
        "times cheaper per call) or grpcio's own server",
    )
    grpc_max_in_flight: int = Field(
        256,
        ge=1,
        description="gRPC calls being served at once; beyond that RESOURCE_EXHAUSTED at once",
    )
    graceful_timeout_s: float = Field(30.0, ge=0, description="time for in-flight requests")
    drain_delay_s: float = Field(
        0.0, ge=0, description="after SIGTERM, serve this long with readiness false"
    )
    model_threads: int = Field(1, ge=1, description="the model runtime's threads")
    model_runtime: Literal["auto", "tensorflow", "litert"] = Field(
        "auto",
        description="litert: the version's model.tflite; tensorflow: its SavedModel; auto: "
        "litert when the version has the file and the runtime is installed",
    )
    log_level: str = Field("info", description="debug | info | warning | error")
    access_log: bool = Field(False, description="one JSON log line per request")
    auth_token_file: Path | None = Field(
        None, description="file with the bearer token every request but health probes needs"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="serve /metrics on this port alone; 0: on --port"
    )
    docs: bool = Field(False, description="serve /docs, /redoc and /openapi.json")

    @model_validator(mode="after")
    def _one_model_source(self) -> ServeSettings:
        if (self.model_dir is None) == (self.model_uri is None):
            raise ValueError("give exactly one of --model-dir and --model-uri")
        return self


SettingsT = TypeVar("SettingsT", bound=_Settings)


def add_flags(parser: argparse.ArgumentParser, settings_class: type[_Settings]) -> None:
    """Adds one ``--flag`` per field; unset flags stay None so env and defaults apply."""
    for name, field in settings_class.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        parser.add_argument(flag, dest=name, default=None, help=f"{field.description} [{env}]")


def from_flags(
    settings_class: type[SettingsT], namespace: argparse.Namespace | dict[str, Any]
) -> SettingsT:
    """Builds settings from parsed flags, falling back to ``MSO_*`` variables and defaults."""
    values = namespace if isinstance(namespace, dict) else vars(namespace)
    given = {
        name: value
        for name, value in values.items()
        if name in settings_class.model_fields and value is not None
    }
    return settings_class(**given)


def parse(settings_class: type[SettingsT], argv: Sequence[str]) -> SettingsT:
    """Parses flags of one entrypoint (used by tests and ``__main__``)."""
    parser = argparse.ArgumentParser()
    add_flags(parser, settings_class)
    return from_flags(settings_class, parser.parse_args(list(argv)))

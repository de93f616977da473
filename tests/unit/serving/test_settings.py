"""Flags and ``MSO_*`` variables for both entrypoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modelservice_serving.settings import ServeSettings, TrainSettings, parse

pytestmark = pytest.mark.unit


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSO_EPOCHS", "9")
    monkeypatch.setenv("MSO_HIDDEN_UNITS", "32,16")
    monkeypatch.setenv("MSO_OUTPUT", "/models/v2")
    settings = parse(TrainSettings, ["--epochs", "3", "--learning-rate", "0.01"])
    assert settings.epochs == 3
    assert settings.learning_rate == 0.01
    assert settings.hidden_units == (32, 16)
    assert settings.output == Path("/models/v2")


def test_defaults_match_the_issue() -> None:
    settings = parse(TrainSettings, ["--output", "/models/v1"])
    assert settings.dataset == "digits"
    assert settings.hidden_units == (128, 128)
    serve = parse(ServeSettings, ["--model-dir", "/models/v1"])
    assert (serve.port, serve.max_batch_size, serve.max_latency_ms) == (8080, 32, 5.0)


def test_serve_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSO_MODEL_DIR", "/models/v3")
    monkeypatch.setenv("MSO_MAX_QUEUE", "7")
    monkeypatch.setenv("MSO_ACCESS_LOG", "true")
    settings = parse(ServeSettings, [])
    assert settings.model_dir == Path("/models/v3")
    assert settings.max_queue == 7
    assert settings.access_log is True


def test_invalid_values_are_rejected() -> None:
    with pytest.raises(ValidationError):
        parse(ServeSettings, ["--model-dir", "/m", "--max-batch-size", "0"])

"""Shared inputs of the operator's unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelservice_operator.builders.common import Owner
from modelservice_operator.models import ModelServiceSpec
from modelservice_operator.settings import OperatorSettings

SAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "samples" / "modelservice-digits.yaml"


@pytest.fixture
def sample() -> dict[str, Any]:
    """The canonical sample as a dict."""
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return data


@pytest.fixture
def spec(sample: dict[str, Any]) -> ModelServiceSpec:
    """The canonical sample's spec."""
    return ModelServiceSpec.model_validate(sample["spec"])


@pytest.fixture
def owner() -> Owner:
    """An owner with a fixed uid."""
    return Owner(name="digits", namespace="ml", uid="uid-1")


@pytest.fixture
def settings() -> OperatorSettings:
    """Default settings with a known image."""
    return OperatorSettings(default_image="registry.local/serving:1")

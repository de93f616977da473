"""The hand-written CRD and the Pydantic models describe the same object."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel

from modelservice_operator.models import ModelService, ModelServiceSpec, ModelServiceStatus

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "deploy" / "crd" / "modelservices.modelservice.dev.yaml"
SAMPLE = REPO / "deploy" / "samples" / "modelservice-digits.yaml"


def _schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _unwrap(annotation: Any) -> Any:
    """Drop ``None`` from an optional annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if set(args) == {int, str}:
            return int | str
        assert len(args) == 1, annotation
        return args[0]
    return annotation


def _check(annotation: Any, schema: dict[str, Any], where: str) -> None:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    assert "description" in schema or where.endswith("[]") or where.endswith("{}"), (
        f"{where}: no description"
    )
    if annotation == int | str:
        assert schema.get("x-kubernetes-int-or-string") is True, where
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        assert schema["type"] == "object", where
        _check_model(annotation, schema, where)
    elif origin is Literal:
        assert schema["type"] == "string", where
        assert set(schema.get("enum", [])) == set(typing.get_args(annotation)), where
    elif origin is list:
        assert schema["type"] == "array", where
        _check(typing.get_args(annotation)[0], schema["items"], where + "[]")
    elif origin is dict:
        assert schema["type"] == "object", where
        value = typing.get_args(annotation)[1]
        if value is Any:
            assert schema.get("x-kubernetes-preserve-unknown-fields") is True, where
        else:
            _check(value, schema["additionalProperties"], where + "{}")
    else:
        expected = {int: "integer", float: "number", str: "string", bool: "boolean"}[annotation]
        assert schema["type"] == expected, f"{where}: {schema['type']} != {expected}"


def _check_model(model: type[BaseModel], schema: dict[str, Any], where: str) -> None:
    props = schema.get("properties", {})
    aliases = {}
    for name, field in model.model_fields.items():
        alias = field.alias or name
        aliases[alias] = field
        assert alias in props, f"{where}.{alias} is in the models but not in the CRD"
        _check(field.annotation, props[alias], f"{where}.{alias}")
    for prop in props:
        assert prop in aliases, f"{where}.{prop} is in the CRD but not in the models"


def test_spec_schema_agrees_with_models() -> None:
    _check_model(ModelServiceSpec, _schema()["properties"]["spec"], "spec")


def test_status_schema_agrees_with_models() -> None:
    _check_model(ModelServiceStatus, _schema()["properties"]["status"], "status")


def test_crd_names_columns_and_status_subresource() -> None:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["metadata"]["name"] == "modelservices.modelservice.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "ModelService",
        "modelservices",
        ["ms"],
    )
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Version", "Accuracy", "Ready", "URL", "Age"]


def test_every_cel_rule_has_a_message_naming_a_field() -> None:
    def walk(node: Any) -> typing.Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            yield from node.get("x-kubernetes-validations", [])
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    rules = list(walk(_schema()))
    assert len(rules) >= 10
    for rule in rules:
        assert "spec." in rule["message"] or "metadata." in rule["message"], rule


def test_sample_parses_with_the_models() -> None:
    sample = yaml.safe_load(SAMPLE.read_text())
    ms = ModelService.model_validate(sample)
    assert ms.spec.training is not None
    assert ms.spec.training.hidden_units == [128, 128]
    assert ms.spec.serving.gpu is not None
    assert ms.spec.serving.gpu.product == "NVIDIA-H100-80GB-HBM3"
    assert ms.spec.quality_gate is not None
    assert ms.spec.quality_gate.minimum == 0.9
    # The wire form round-trips to what was written.
    assert ms.spec.model_dump(by_alias=True, exclude_unset=True) == sample["spec"]


@pytest.mark.parametrize(
    ("gate", "error"),
    [
        ({"metric": "loss", "minimum": 0.5}, "metric loss (lower is better) takes maximum"),
        ({"metric": "loss"}, "metric loss (lower is better) takes maximum"),
        ({"minimum": 0.9, "maximum": 0.3}, "metric accuracy (higher is better) takes minimum"),
        ({"metric": "accuracy"}, "metric accuracy (higher is better) takes minimum"),
    ],
)
def test_gate_bound_must_fit_the_metric(gate: dict[str, Any], error: str) -> None:
    from pydantic import ValidationError

    from modelservice_operator.models import QualityGateSpec

    with pytest.raises(ValidationError, match=re.escape(error)):
        QualityGateSpec.model_validate(gate)
    assert QualityGateSpec.model_validate({"metric": "loss", "maximum": 0.3}).passes(0.3)
    assert not QualityGateSpec.model_validate({"metric": "loss", "maximum": 0.3}).passes(None)

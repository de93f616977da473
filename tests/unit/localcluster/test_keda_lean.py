"""The lean KEDA build: a module copy trimmed to the scalers the local cluster links."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster import keda_lean

BUILDER = """package scaling

func buildScaler(ctx context.Context, triggerType string) (scalers.Scaler, error) {
\t// TRIGGERS-START
\tswitch triggerType {
\tcase "azure-queue":
\t\treturn scalers.NewAzureQueueScaler(config)
\tcase "cpu":
\t\treturn scalers.NewCPUMemoryScaler(corev1.ResourceCPU, config)
\t// TODO: use other way for test.
\tcase "external-mock":
\t\treturn scalers.NewExternalMockScaler(config)
\tcase "metrics-api":
\t\treturn scalers.NewMetricsAPIScaler(config, client)
\tdefault:
\t\treturn nil, fmt.Errorf("no scaler found for type: %s", triggerType)
\t}
\t// TRIGGERS-END
}
"""


def test_only_the_files_of_scalers_not_kept_go() -> None:
    names = [
        "azure_queue_scaler.go",
        "azure_queue_scaler_test.go",
        "gcp_spanner_scaler_integration_test.go",
        "metrics_api_scaler.go",
        "metrics_api_scaler_test.go",
        "scaler.go",
        "scaler_test.go",
    ]
    assert keda_lean.removed_files(names, {"metrics_api"}) == [
        "azure_queue_scaler.go",
        "azure_queue_scaler_test.go",
        "gcp_spanner_scaler_integration_test.go",
    ]


def test_the_switch_keeps_the_cases_whose_constructor_is_left_and_the_default() -> None:
    trimmed = keda_lean.trim_switch(BUILDER, {"NewCPUMemoryScaler", "NewMetricsAPIScaler"})
    switch = trimmed[trimmed.index("TRIGGERS-START") : trimmed.index("TRIGGERS-END")]
    assert [
        line.strip() for line in switch.splitlines() if "case" in line or "default" in line
    ] == [
        'case "cpu":',
        'case "metrics-api":',
        "default:",
    ]
    assert "NewAzureQueueScaler" not in trimmed
    assert "TODO" not in trimmed  # the removed case's comment goes with it
    # Outside the markers nothing changes.
    assert trimmed.startswith(BUILDER[: BUILDER.index("// TRIGGERS-START")])
    assert trimmed.endswith(BUILDER[BUILDER.index("// TRIGGERS-END") :])
    assert "\t}\n\t// TRIGGERS-END" in trimmed


def test_a_switch_without_default_is_refused() -> None:
    builder = BUILDER.replace("\tdefault:\n", '\tcase "other":\n')
    with pytest.raises(ValueError, match="no default case"):
        keda_lean.trim_switch(builder, {"NewMetricsAPIScaler"})


def test_shared_names_the_removed_files_defined_are_added_once() -> None:
    uses = "metricSpec := v2.MetricSpec{Type: externalMetricType}"
    added = keda_lean.shared_definitions([uses])
    assert added.startswith("package scalers\n")
    assert 'const externalMetricType = "External"' in added
    defines = 'const (\n\texternalMetricType = "External"\n)'
    assert keda_lean.shared_definitions([uses, defines]) == ""


def test_trim_edits_a_module_copy_in_place(tmp_path: Path) -> None:
    scalers = tmp_path / "pkg" / "scalers"
    scaling = tmp_path / "pkg" / "scaling"
    scalers.mkdir(parents=True)
    scaling.mkdir(parents=True)
    (scalers / "scaler.go").write_text("package scalers\n")
    (scalers / "azure_queue_scaler.go").write_text(
        'package scalers\n\nconst (\n\texternalMetricType = "External"\n)\n\n'
        "func NewAzureQueueScaler(config *C) (Scaler, error) { return nil, nil }\n"
    )
    (scalers / "cpu_memory_scaler.go").write_text(
        "package scalers\n\nfunc NewCPUMemoryScaler(r R, config *C) (Scaler, error) {\n"
        "\t_ = externalMetricType\n\treturn nil, nil\n}\n"
    )
    (scalers / "metrics_api_scaler.go").write_text(
        "package scalers\n\nfunc NewMetricsAPIScaler(config *C, c K) (Scaler, error) {\n"
        "\treturn nil, nil\n}\n"
    )
    (scaling / "scalers_builder.go").write_text(BUILDER)

    removed = keda_lean.trim(tmp_path, {"cpu_memory", "metrics_api"})

    assert removed == ["azure_queue_scaler.go"]
    assert sorted(p.name for p in scalers.iterdir()) == [
        "cpu_memory_scaler.go",
        "lean_build.go",
        "metrics_api_scaler.go",
        "scaler.go",
    ]
    assert "externalMetricType" in (scalers / "lean_build.go").read_text()
    builder = (scaling / "scalers_builder.go").read_text()
    assert 'case "cpu"' in builder
    assert 'case "metrics-api"' in builder
    assert 'case "azure-queue"' not in builder

{{/* The chart name, overridable by nameOverride. */}}
{{- define "modelservice-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects (63 characters at most: DNS labels).
A release named like the chart is not repeated.
*/}}
{{- define "modelservice-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "modelservice-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "modelservice-operator.labels" -}}
helm.sh/chart: {{ include "modelservice-operator.chart" . }}
{{ include "modelservice-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelservice-operator
{{- end }}

{{/* Labels that select the operator pod; never change them (Deployment selectors are immutable). */}}
{{- define "modelservice-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelservice-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "modelservice-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelservice-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "modelservice-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Cluster-scoped objects (ClusterRoles and their bindings) are named after the release and its
namespace, so two releases in two namespaces never collide.
*/}}
{{- define "modelservice-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "modelservice-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

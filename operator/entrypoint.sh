#!/bin/sh
set -eu
# The operator reads the same URL: a standby (leader election) answers it until kopf runs.
MSO_OPERATOR_LIVENESS="${MSO_OPERATOR_LIVENESS:-http://0.0.0.0:8080/healthz}"
export MSO_OPERATOR_LIVENESS
set -- --standalone --liveness="$MSO_OPERATOR_LIVENESS" "$@"
scope="--all-namespaces"
for ns in $(echo "${MSO_OPERATOR_NAMESPACES:-}" | tr ',' ' '); do
  scope=""
  set -- "$@" --namespace "$ns"
done
exec kopf run -m modelservice_operator $scope "$@"

#!/bin/sh
set -eu
set -- --standalone --liveness="${MSO_OPERATOR_LIVENESS:-http://0.0.0.0:8080/healthz}" "$@"
scope="--all-namespaces"
for ns in $(echo "${MSO_OPERATOR_NAMESPACES:-}" | tr ',' ' '); do
  scope=""
  set -- "$@" --namespace "$ns"
done
exec kopf run -m modelservice_operator $scope "$@"

#!/usr/bin/env bash
# Builds the serving image from a minimal context (pyproject.toml + serving/), so the build
# never ships the repository's virtualenv or caches to the Docker daemon.
#   serving/scripts/build-image.sh [TAG] [extra docker build args...]
# BASE_IMAGE (env) picks the base; without a registry run bootstrap-base-image.sh first and
# use BASE_IMAGE=local/python-base:bookworm.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
tag="${1:-modelservice-serving:dev}"
shift || true
context="$(mktemp -d "${TMPDIR:-/tmp}/mso-image-context.XXXXXX")"
trap 'rm -rf "$context"' EXIT

cp "$repo/pyproject.toml" "$context/"
mkdir -p "$context/serving"
(cd "$repo/serving" && tar -c --exclude=__pycache__ --exclude='*.pyc' .) | tar -C "$context/serving" -x

args=(--network host -f "$context/serving/Dockerfile" -t "$tag")
if [[ -n "${BASE_IMAGE:-}" ]]; then
  args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build "${args[@]}" "$@" "$context"

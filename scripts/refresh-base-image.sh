#!/usr/bin/env bash
# Re-pin the Dockerfile's base image to the digest its tag points at today.
#
#   bash scripts/refresh-base-image.sh                      # resolve python:3.11-slim, rewrite FROM
#   bash scripts/refresh-base-image.sh --digest sha256:...  # rewrite FROM with a digest you resolved
#
# Why: `FROM python:3.11-slim` builds on whatever the tag means on the day of the build, so two
# builds of one commit can differ and a rebuild for a rollback is not the image that ran. The
# Dockerfile names the tag (for people) and the digest (for the builder, which then ignores
# the tag). Refresh it on purpose, for the base image's security fixes: run this, rebuild,
# run the tests and `aggregator selftest`, commit the Dockerfile (docs/deploying.md, "A
# versioned, reproducible image").
#
# The digest is the tag's multi-platform index (what `docker pull python:3.11-slim` resolves),
# read with `docker buildx imagetools inspect` when Docker is here, otherwise from Docker Hub's
# registry API with curl (an anonymous pull token, then a HEAD of the manifest).
set -euo pipefail
cd "$(dirname "$0")/.."
dockerfile=${DOCKERFILE:-Dockerfile}

from_line=$(grep -m1 -E '^FROM ' "$dockerfile") || { echo "no FROM line in $dockerfile" >&2; exit 1; }
image=$(awk '{print $2}' <<<"$from_line")
tag_ref=${image%@*}                  # python:3.11-slim
repository=${tag_ref%:*}             # python
tag=${tag_ref##*:}                   # 3.11-slim
[[ $repository == */* ]] || repository="library/$repository"

digest=""
if [[ ${1:-} == --digest ]]; then
    digest=${2:-}
elif command -v docker >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
    digest=$(docker buildx imagetools inspect "$tag_ref" --format '{{json .Manifest}}' \
             | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])')
else
    token=$(curl -fsS --max-time 20 \
        "https://auth.docker.io/token?service=registry.docker.io&scope=repository:${repository}:pull" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
    digest=$(curl -fsSI --max-time 20 -H "Authorization: Bearer $token" \
        -H 'Accept: application/vnd.oci.image.index.v1+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
        "https://registry-1.docker.io/v2/${repository}/manifests/${tag}" \
        | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}')
fi

if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
    echo "could not resolve a digest for $tag_ref (got '${digest}'): is the registry reachable?" >&2
    exit 1
fi

new_line="FROM ${tag_ref}@${digest}"
if [[ $from_line == "$new_line" ]]; then
    echo "$dockerfile already pins $tag_ref at $digest"
    exit 0
fi
# Only the first FROM line changes; everything else stays byte for byte.
python3 - "$dockerfile" "$new_line" <<'EOF'
import sys
from pathlib import Path

path, new_line = Path(sys.argv[1]), sys.argv[2]
lines = path.read_text().splitlines(keepends=True)
index = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
lines[index] = new_line + "\n"
path.write_text("".join(lines))
EOF
echo "$dockerfile: ${from_line#FROM } -> ${tag_ref}@${digest}"

#!/usr/bin/env bash
# Regenerate the images' locked requirements (exact versions + sha256 hashes) from pyproject.toml:
#   bash deploy/docker/lock.sh          # needs uv (pip install uv); run after changing dependencies
# requirements/serve.txt: the `serve` extra, every platform (the CPU image builds on amd64 and arm64).
# requirements/gpu.txt: `serve` + requirements/gpu.in, linux x86_64 (the CUDA image).
# tests/deploy/test_docker.py checks that both still satisfy pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
UV="${UV:-uv}"
REQ=deploy/docker/requirements
common=(--python-version 3.11 --generate-hashes --custom-compile-command "bash deploy/docker/lock.sh")
"$UV" pip compile pyproject.toml --extra serve --universal "${common[@]}" -o "$REQ/serve.txt"
"$UV" pip compile pyproject.toml "$REQ/gpu.in" --extra serve "${common[@]}" \
    --python-platform x86_64-manylinux_2_28 --no-emit-package onnxruntime -o "$REQ/gpu.txt"

#!/usr/bin/env bash
# Download the wheels of bench/gpu_wheels.txt (CPython 3.12, x86-64 Linux: the lent GPU
# machine's Python) into .whl/ (git-ignored), for bench/gpu_grpo_levers.sh to install there.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
mkdir -p .whl
grep -v '^#' bench/gpu_wheels.txt | grep . | while read -r requirement; do
  "$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$requirement"
done
ls -la .whl
du -sh .whl

#!/usr/bin/env bash
# Fill .whl/ with the pure-Python wheels bench/gpu_check.sh needs on the device machine (Python
# 3.12, torch already installed there): netgeom's dependencies its image lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 mnist1d==0.0.2.post1
ls .whl

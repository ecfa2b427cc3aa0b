#!/usr/bin/env bash
# Every GPU check of netgeom in one device call (about 8 minutes on an H200), results under $OUT:
#   nvidia-smi.txt   the device
#   tests.log        the GPU-marked tests (tests/test_devices.py): CUDA training and resume,
#                    bf16, bit-identical reruns with execution.deterministic, a GPU checkpoint's
#                    statistics on the CPU against the GPU, the region walk and the curvature stage on the GPU
#                    against the CPU
#   gpu.log          bench/gpu.py: resnet18_k / cnn5_k k=64 on 50,000 CIFAR-shaped images in
#                    memory, fp32/bf16 x NCHW/channels-last, batch 512 (epoch s, images/s,
#                    TFLOP/s against the bf16 peak), the engines (Jacobian vmap batch, curve,
#                    region walk, one star step) on the GPU against the CPU
# On a machine without a GPU it says so and exits 0.
#
# The device machine has torch but not all of netgeom's pure-Python dependencies and no network:
# run `bench/gpu_wheels.sh` here first (it fills .whl/), then carry .whl:
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python  # this project's own environment, where there is one

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no GPU visible (torch.cuda.is_available() is False here); nothing measured" | tee "$OUT/gpu_check.txt"
    exit 0
fi

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/netgeom-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/netgeom-site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 NETGEOM_QUIET=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/versions.txt"

status=0
timeout 180 "$PY" -m pytest tests/test_devices.py -q -p no:cacheprovider -x 2>&1 | tee "$OUT/tests.log" || status=1
BENCH_BATCH=512 timeout 300 "$PY" bench/gpu.py 2>&1 | tee "$OUT/gpu.log" || status=1
echo "gpu_check: done (status $status); results in $OUT"
exit $status

#!/usr/bin/env bash
# Every GPU check of the project in one call on the device machine, each step time-capped so
# that one slow step cannot eat the others' time (a capped step still prints what it had):
#   gpu_oom.py       issue 5: a real CUDA OOM mid-reply, recovery in the same process
#   gpu.py --quick   issue 6: decode tok/s vs the copy-bandwidth limit, correctness vs eager
#   device_check.py  issue 7: device_map="auto", CPU offload warning, 4-bit / 8-bit loading
# Wheels the device lacks (platformdirs, bitsandbytes) are carried in .whl/ (see
# benchmarks/README.md). Results land in $OUT.
set -u
OUT=${OUT:-/tmp/llama_tui_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD" LLAMA_TUI_HOME=/tmp/llama_tui_home
if ls .whl/*.whl >/dev/null 2>&1; then
  pip install -q --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
timeout "${OOM_S:-50}" python benchmarks/gpu_oom.py 2>&1 | tail -n 40 | tee "$OUT/oom.log"
timeout "${GPU_S:-170}" python benchmarks/gpu.py --quick 2>&1 | tee "$OUT/gpu.log" | grep -v "^ *File\|^    "
timeout "${CHECK_S:-70}" python benchmarks/device_check.py 2>&1 | tail -n 30 | tee "$OUT/check.log"
echo "device_all done"

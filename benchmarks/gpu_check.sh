#!/usr/bin/env bash
# The GPU check: tests/test_gpu.py (the CUDA and bfloat16 code paths of the rim package against
# the CPU in float32, on tiny random models; about a minute). Run it on a machine with a GPU, from
# the repository root or anywhere:
#
#     bash benchmarks/gpu_check.sh            # extra arguments go to pytest, e.g. -x or -k llama
#
# It needs torch (a CUDA build), transformers, peft, h5py, pandas, pyarrow, scipy and pytest; not
# Snakemake. It prints the GPU and library versions first, fails when torch sees no GPU (rather
# than skipping every test), and writes a JUnit report to $OUT/gpu_check.xml when OUT is set.
# PYTHON picks the interpreter (default: python3); RIM_TEST_DEVICE=cpu runs it all on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
    echo "nvidia-smi: not found"
fi
"$python" - <<'EOF'
import os
import platform
import sys

import torch
import transformers

try:
    import peft

    peft_version = peft.__version__
except ImportError:
    peft_version = "not installed"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"transformers {transformers.__version__}, peft {peft_version}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}, bfloat16 supported: {torch.cuda.is_bf16_supported()}")
elif os.environ.get("RIM_TEST_DEVICE") == "cpu":
    print("device: the CPU (RIM_TEST_DEVICE=cpu: checks the tests' own logic, not a GPU)")
else:
    sys.exit("torch sees no CUDA GPU: nothing to check here (RIM_TEST_DEVICE=cpu runs the tests on the CPU)")
EOF

report=()
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    report=(--junitxml "$OUT/gpu_check.xml")
fi
# -o addopts="" drops the default deselection of the gpu marker (pyproject.toml).
PYTHONPATH=scripts${PYTHONPATH:+:$PYTHONPATH} exec "$python" -m pytest tests/test_gpu.py -m gpu -o addopts="" \
    -p no:cacheprovider -q -rfEs --durations=5 "${report[@]}" "$@"

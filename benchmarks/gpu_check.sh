#!/usr/bin/env bash
# The GPU check, prepared on a CPU-only machine: the GPU tests and benchmarks on one CUDA device in
# under 10 minutes, every figure written under $OUT (when set, e.g. by a device runner) or results/gpu/.
#
#   bash benchmarks/gpu_check.sh              # PYTHON=/path/to/python to use another interpreter
#   bash benchmarks/gpu_check.sh --self-test  # on CPU: every part's command with CPU stand-ins
#
# Needs a Python with CUDA torch, triton, transformers, pytest and the project's other
# dependencies (setuptools and grpcio-tools among them); the client (./client) and the services (.)
# are installed editable here if that Python lacks them, without dependencies and without build
# isolation (a device machine may have no package index): the client's build generates the gRPC
# stubs from proto/ if they are missing.
#
# Parts, each with its own time limit (one failing or timing out does not stop the others; the
# limits add up to 10 minutes):
#   env               torch, CUDA, triton versions and the device
#   gpu-tests         tests/executor/test_gpu.py (exactness against transformers on CUDA, Triton
#                     kernels against the torch backend, block copies device<->pinned host, the
#                     measured `auto` choice) and test_triton_backend.py with compiled kernels
#   selection         what `auto` picks per head shape and dtype, with each backend's error and time
#   attention-bench   decode attention at batch 1-256 x context 512-4096, both backends; the
#                     kernel's bandwidth against a device-to-device copy; swap time alone,
#                     overlapped with the forward, serialized
#   executor-bench    whole decode steps, paged (auto, torch, triton) against a dense forward;
#                     auto first: the backend an executor picks there (measured at start-up)
#   verdict           whether auto picked the backend whose decode steps measured fastest
#                     (benchmarks/gpu_check_verdict.py; exit 1 if not)
# summary.txt lists each part's exit status and seconds, then the verdict.
#
# --self-test runs the same parts on a CPU-only machine, each with a stand-in that exercises its
# command line and what it reads and writes (the GPU tests collected, not run; the selection and
# the executor benchmark on CPU backends; the attention benchmark's --help), so that the suite
# catches a broken part before a GPU machine is spent on it (tests/benchmarks/test_gpu_check.py).
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=${OUT:-results/gpu}
mkdir -p "$DEST"
# Models and measured choices are cached outside $DEST: only figures go back.
export INFERCEPT_CACHE_DIR=${INFERCEPT_CACHE_DIR:-${TMPDIR:-/tmp}/infercept-gpu-check}
export GRPC_VERBOSITY=ERROR
if ! "$PY" -c "import infercept.v1.executor_pb2, svc_common, executor_svc" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps --no-build-isolation -e ./client -e .
fi
SUMMARY="$DEST/summary.txt"
: >"$SUMMARY"

part() {  # part NAME LIMIT_S COMMAND...: run COMMAND into $DEST/NAME.txt within LIMIT_S seconds
    local name=$1 limit=$2 began=$SECONDS
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$DEST/$name.txt" 2>&1
    local status=$?
    echo "$name: exit $status in $((SECONDS - began))s" | tee -a "$SUMMARY"
    tail -n 5 "$DEST/$name.txt"
}

GPU_TESTS=(tests/executor/test_gpu.py tests/executor/test_triton_backend.py)
if [[ "${1:-}" == "--self-test" ]]; then
    part env 60 "$PY" -c 'import torch; print("torch", torch.__version__, "(self-test on CPU)")'
    part gpu-tests 120 "$PY" -m pytest -q -p no:cacheprovider --collect-only "${GPU_TESTS[@]}"
    part selection 120 "$PY" -m benchmarks.backend_selection --device cpu --dtypes float32
    part attention-bench 60 "$PY" -m benchmarks.attention_bench --help
    part executor-bench 180 "$PY" -m benchmarks.executor_bench --device cpu --models tiny --backends auto,torch --repeats 2
else
    part env 30 bash -c "nvidia-smi; $PY -c 'import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, torch.cuda.get_device_name())'"
    part gpu-tests 200 "$PY" -m pytest -q -p no:cacheprovider "${GPU_TESTS[@]}"
    part selection 60 "$PY" -m benchmarks.backend_selection --device cuda
    part attention-bench 180 "$PY" -m benchmarks.attention_bench --repeats 10
    part executor-bench 120 "$PY" -m benchmarks.executor_bench --device cuda --backends auto,torch,triton --repeats 10
fi
part verdict 10 "$PY" -m benchmarks.gpu_check_verdict "$DEST"
cat "$DEST/verdict.txt" >>"$SUMMARY"
echo "figures in $DEST"
cat "$SUMMARY"

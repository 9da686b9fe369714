#!/usr/bin/env bash
# The one prepared GPU check (benchmarks/README.md): training, pretraining and evaluation
# throughput of the paper configuration on one CUDA device, then the projected wall time of the
# whole paper-scale study. Run from anywhere; everything goes to "$OUT" (default ./gpu-out):
#   gpu_check.log   everything printed
#   bench.jsonl     one JSON record per measured configuration
#   projection.txt  project_study.py's table
# Expects torch with CUDA; installs only a missing runtime dependency (numpy, scipy, nibabel,
# tqdm), if pip can reach an index at all. Each step has its own time limit and the whole script
# a budget (GPU_CHECK_BUDGET_S, default 360 s): a step that would start with too little left is
# skipped, and one that fails or hangs does not stop the others. The most important figures
# come first.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || true)}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-360}"

if [[ -z "$PYTHON" ]]; then
    echo "gpu_check: no python on PATH" >&2
    exit 1
fi
if ! "$PYTHON" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    echo "gpu_check: no CUDA device is available to torch ($("$PYTHON" -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -n 1)); nothing measured" >&2
    exit 1
fi
missing=$("$PYTHON" -c "import importlib.util as u; print(' '.join(m for m in ('numpy', 'scipy', 'nibabel', 'tqdm') if u.find_spec(m) is None))")
if [[ -n "$missing" ]]; then
    echo "gpu_check: installing missing modules: $missing"
    if ! timeout 120 "$PYTHON" -m pip install --quiet --retries 0 --timeout 10 $missing; then
        echo "gpu_check: missing Python modules ($missing) and pip could not install them" >&2
        exit 1
    fi
fi

OUT="${OUT:-./gpu-out}"
mkdir -p "$OUT"
RECORDS="$OUT/bench.jsonl"
export PYTHONUNBUFFERED=1

# step LIMIT_S COMMAND...: run under `timeout`, capped by what is left of the budget.
step() {
    local limit=$1 left=$((BUDGET_S - SECONDS)) status=0
    shift
    if ((left < 20)); then
        echo "## skipped (budget of ${BUDGET_S} s spent): $*"
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "## [${SECONDS} s] $* (limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" || status=$?
    if ((status != 0)); then
        echo "## exit status ${status}$( ((status == 124 || status == 137)) && echo ' (time limit)'): $*"
    fi
    return 0
}

main() {
    echo "## gpu_check $(date -u +%FT%TZ), budget ${BUDGET_S} s"
    nvidia-smi || true
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version(), torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"
    local train=("$PYTHON" benchmarks/bench_train.py --configs paper --device cuda --amp bf16 --peak-tflops 790 --json "$RECORDS")
    # The study's configuration: batch 32, compiled as the training loop does on CUDA; epoch checkpoint timed.
    step 150 "${train[@]}" --batch 32 --compile --steps 60 --warmup 10 --checkpoint-dir "${TMPDIR:-/tmp}"
    # Each pretraining method at the paper preset (eager: four compilations would not fit the budget).
    step 100 "$PYTHON" benchmarks/bench_pretrain.py --preset paper --device cuda --steps 10 --warmup 3 --json "$RECORDS"
    step 90 "$PYTHON" benchmarks/bench_evaluate.py --device cuda --volumes 280 --json "$RECORDS"
    step 20 "$PYTHON" benchmarks/project_study.py --json "$RECORDS"
    # Comparisons: eager at batch 32, and the throughput ceiling at batch 128.
    step 60 "${train[@]}" --batch 32 --steps 60 --warmup 10
    step 60 "${train[@]}" --batch 128 --steps 20 --warmup 5
    # With the time left: pretraining compiled, as the loop runs it.
    step 150 "$PYTHON" benchmarks/bench_pretrain.py --preset paper --device cuda --steps 10 --warmup 3 --compile --json "$RECORDS"
    echo "## final projection"
    timeout 60 "$PYTHON" benchmarks/project_study.py --json "$RECORDS" | tee "$OUT/projection.txt" || true
    echo "## done in ${SECONDS} s"
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"

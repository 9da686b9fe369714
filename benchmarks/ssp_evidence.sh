#!/usr/bin/env bash
# Does each pretraining method learn something a segmenter can use? (issue 4, section 4)
#
# On the built-in synthetic cohort with the cpu preset: pretrain SimCLR, PCL, DINO and MIM for
# ITERATIONS iterations each (default 1500, about 9 epochs over the 5,347 unlabelled slices),
# then linear-probe the frozen networks against a random one on 2-subject subsets drawn with
# SUBSET_SEEDS (default 0,1,2): encoder features (what SimCLR, PCL and DINO train) and decoder
# features (what MIM trains besides the encoder). Everything goes to RUNS (default
# runs/evidence): pretrain-<method>/ (metrics.csv has the losses, the collapse checks and, for
# MIM, the mask-value baseline), probe-n2-s<seed>.json and probe-n2-summary.json.
# Pretrainings that finished are kept; interrupted ones resume. Extra arguments go to every
# pretraining, e.g. --set dino.teacher_init=student_copy.
#
# About half an hour on 2 CPU cores (2026-11-29 VM): the probe step 9.6 min (measured: 5 inits x
# 2 feature sets x 3 subsets); pretraining about 20 min (SimCLR 4.4 and MIM 5.5 min measured at
# 1,500 iterations; PCL about 3.5 and DINO about 8.5 min, scaled from their 300-iteration times).
#
#   bash benchmarks/ssp_evidence.sh [RUNS] [ITERATIONS] [SUBSET_SEEDS] [-- pretrain args]
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
RUNS="${1:-runs/evidence}"
ITERATIONS="${2:-1500}"
SEEDS="${3:-0,1,2}"
shift $(( $# < 3 ? $# : 3 ))
[[ "${1:-}" == "--" ]] && shift

for method in simclr pcl dino mim; do
    out="$RUNS/pretrain-$method"
    if [[ -f "$out/complete.json" ]]; then
        echo "ssp_evidence: $out finished, kept"
        continue
    fi
    resume=()
    [[ -f "$out/checkpoint.pt" ]] && resume=(--resume)
    "$PYTHON" run.py pretrain --method "$method" --preset cpu --iterations "$ITERATIONS" --out "$out" \
        --no-progress "${resume[@]}" "$@"
done

"$PYTHON" run.py probe --preset cpu --runs-dir "$RUNS" --n-subjects 2 --subset-seed "$SEEDS" \
    --inits random,simclr,pcl,dino,mim --features encoder,decoder

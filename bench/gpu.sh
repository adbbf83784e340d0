#!/usr/bin/env bash
# The GPU check of the annotate stage, in one script: on a machine with a CUDA GPU and the project's
# environment already installed (it installs nothing), it runs the GPU tests, then bench/annotate.py on
# the GPU with real-size architectures (random weights: ViT-B-32, ViT-L-14, 768-d aesthetic head,
# efficientnet_b3a), the whole stage and B/32 alone, and prints one line per figure. About 5-7 minutes
# on one H100-class GPU, most of it writing the 2.5 GB of random checkpoints once.
#
#   bench/gpu.sh                      # from anywhere; PYTHON=... to choose the interpreter
#   IMAGES=4096 BATCH=256 bench/gpu.sh
#
# Targets: whole stage >= 1,500 images/s, B/32 alone >= 4,000 images/s on one H100-class GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
IMAGES=${IMAGES:-4096}
BATCH=${BATCH:-256}
MODELS_DIR=${MODELS_DIR:-${TMPDIR:-/tmp}/curation-bench-models}
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" - <<'PY'
import sys, torch, torchvision
if not torch.cuda.is_available():
    sys.exit("gpu.sh: torch sees no CUDA GPU; nothing measured")
print(f"gpu   device                     {torch.cuda.get_device_name(0)} (torch {torch.__version__}, torchvision {torchvision.__version__})")
PY

started=$(date +%s)
tests=$(timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider tests/models/test_gpu_decode.py \
  "tests/models/test_clip_and_heads.py::test_gpu_fp16_scores_match_cpu" 2>&1 | tail -1) || true
echo "gpu   tests                      ${tests}"

run_bench() {  # label, extra args
  local label=$1; shift
  timeout 300 "$PYTHON" bench/annotate.py --device cuda --size real --models-dir "$MODELS_DIR" \
    --images "$IMAGES" --batch-size "$BATCH" --decode-workers 8 "$@" 2>&1 \
    | grep -E '^(cuda|writing)' || echo "gpu   ${label}: bench failed (rerun without the grep to see why)"
}
run_bench "whole stage"
run_bench "B/32 alone" --only clip_vitb32
run_bench "B/32 alone, CPU decode" --only clip_vitb32 --cpu-decode
echo "gpu   total                      $(( $(date +%s) - started )) s"

#!/usr/bin/env bash
# GRPO step-time levers on one GPU, in one command of under 8 minutes (issue #16 item 3):
# every lever of bench/gpu_grpo_step.py against the paper's on-policy default, measured in the
# same process on copies of one random-init Qwen2.5-VL-7B-size model.
#
# On the lent H200 (its image lacks trl/datasets/pydantic and has an older transformers):
#   here, once:   bench/fetch_gpu_wheels.sh            # ~20 MB of wheels into .whl/ (git-ignored)
#   there:        bash bench/gpu_grpo_levers.sh        # run() with carry [".whl"], timeout_s 540
# Extra arguments go to the bench: `SKIP_WHEELS=1 PYTHON=.venv/bin/python bash bench/gpu_grpo_levers.sh --cpu`
# tries the whole path on a CPU machine.
# Results: $OUT/grpo_levers.jsonl (one JSON line per lever, a summary line last), the log and the
# Markdown table in $OUT/grpo_levers.out. Without $OUT they go to /tmp/grpo-levers.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/grpo-levers}
mkdir -p "$OUT"
if [ -z "${SKIP_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" \
  || echo "no nvidia-smi: pass --cpu to try this script's path on a CPU machine"
"$PY" -c "import torch, transformers, trl, peft, datasets; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, \
'datasets', datasets.__version__)" || exit 1
# Budget (the 2026-11-26 run: 34 s warm-up step, 17.5 s steps): imports and model init (~1 min),
# default (1 warm-up + 2 steps), spg4 (a warm-up cycle of 4 + 4), spg2 (2 + 2), liger (1 + 2): about
# 5.5 minutes expected. The bench skips a lever whose estimate would pass 370 s, and the outer
# timeout (420 s; with the wheels' install and the checks above the script stays under 8 minutes)
# is the hard stop: what is under $OUT by then still comes back. eager is left out here (sdpa is the default;
# it runs with --levers eager); vllm and flash2 report why they cannot run without their packages.
timeout 420 "$PY" bench/gpu_grpo_step.py --levers default,spg4,spg2,flash2,paged,liger,vllm \
  --measure-steps 2 --budget-s 370 "$@" \
  --out "$OUT/grpo_levers.jsonl" --markdown 2>"$OUT/grpo_levers.log" | tee "$OUT/grpo_levers.out"
status=${PIPESTATUS[0]}
tail -n 5 "$OUT/grpo_levers.log"
exit "$status"

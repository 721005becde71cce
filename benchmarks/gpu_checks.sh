#!/usr/bin/env bash
# Every GPU check of docs/scaling.md in one command, for a machine with one CUDA GPU and many cores (~10 min on an
# H100/H200 with 16 cores). Run from the repository root:
#
#     OUT=runs/gpu_checks EXTRAS=/path/to/site bash benchmarks/gpu_checks.sh
#
# EXTRAS (optional): a folder on PYTHONPATH holding flash-attn and mamba-ssm (docs/scaling.md, "FlashAttention and
# Mamba"). It is added only where those packages are measured, so every other check runs with PyTorch's SDPA.
#
# Phase 1 (the GPU shared): the CUDA tests, then T-Maze-10 learning runs in parallel (learning_on_device.py): seeds
#   0-4 at the defaults, seeds 0-1 with --cuda_graph, and one run each with FlashAttention and with Mamba.
# Phase 2 (one learner process on the GPU, pinned to cores 0-1): gpu_suite.py's learner rows (eager and --cuda_graph,
#   SDPA and flash, fp32 and bf16, T = 128 / 512 / 2048); beside it, on cores 2-15, async_collect.py with 1, 2 and 4
#   collectors (CPU learner, an env of 25 ms of CPU per env step: acting is the larger share and splits over the
#   workers, so more collectors should raise the throughput). Last: the torch.compile reduce-overhead rows at T = 128.
# Results: $OUT/tests.log, learning.jsonl, suite.jsonl, async.jsonl, compile.jsonl and curves.tar.gz (every CSV).
set -u
OUT=${OUT:-runs/gpu_checks}
PY=${PY:-python3}
EXTRAS=${EXTRAS:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=".:${PYTHONPATH:-}"
pin() { local cores=$1; shift; if command -v taskset > /dev/null; then taskset -c "$cores" "$@"; else "$@"; fi; }
with_extras() { PYTHONPATH="${EXTRAS:+$EXTRAS:}$PYTHONPATH" "$@"; }
curves=$(mktemp -d)
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/progress.log"; }

stamp "phase 1: tests and learning runs"
( with_extras $PY -m pytest -q -p no:cacheprovider tests/trainers/test_cuda_graph.py tests/modules/test_real_gpu_kernels.py \
      tests/modules/test_acting_fast_paths.py tests/objectives/test_loss_device.py tests/trainers/test_collector_policy.py \
      tests/objectives/test_packed_batches.py tests/objectives/test_target_encoders.py tests/trainers/test_gpu_readiness.py \
      > "$OUT/tests.log" 2>&1; stamp "tests done (rc $?)" ) &
lod() { $PY benchmarks/learning_on_device.py --device cuda --tasks tmaze10 --threads 1 "$@"; }
( lod --seeds 0 1 2 3 4 --jobs 5 --out "$curves/defaults" > "$curves/defaults.jsonl" 2>&1
  stamp "T-Maze-10 defaults done" ) &
( lod --seeds 0 1 --jobs 2 --out "$curves/cuda_graph" --extra --cuda_graph --no-trim_windows \
      > "$curves/cuda_graph.jsonl" 2>&1; stamp "T-Maze-10 --cuda_graph done" ) &
if [ -n "$EXTRAS" ]; then
  ( with_extras lod --seeds 0 --jobs 1 --out "$curves/flash" --extra --mixed_precision bf16 > "$curves/flash.jsonl" 2>&1
    stamp "T-Maze-10 flash done" ) &
  ( with_extras lod --seeds 0 --jobs 1 --out "$curves/mamba" --extra --traj_encoder mamba > "$curves/mamba.jsonl" 2>&1
    stamp "T-Maze-10 mamba done" ) &
fi
wait
cat "$curves"/*.jsonl > "$OUT/learning.jsonl"
tar czf "$OUT/curves.tar.gz" -C "$curves" .
stamp "phase 2: learner throughput beside async collection"
( for n in 1 2 4; do
    pin 2-15 $PY benchmarks/async_collect.py --rounds 1 --warmup 1 --epochs 3 --env_cost_per_env_ms 25 \
        --num_collectors $n --num_threads 4
  done > "$OUT/async.jsonl" 2>&1; stamp "async done" ) &
with_extras pin 0-1 $PY benchmarks/gpu_suite.py --quick --skip acting tmaze_horizon --compile-loss no \
    > "$OUT/suite.jsonl" 2>&1
stamp "suite done (rc $?)"
wait
pin 0-1 $PY benchmarks/gpu_suite.py --seq-lens 128 --skip acting tmaze_horizon --compile-loss reduce-overhead \
    --no-cuda-graph > "$OUT/compile.jsonl" 2>&1
stamp "compile rows done (rc $?)"

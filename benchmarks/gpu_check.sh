#!/usr/bin/env bash
# The GPU path, as one prepared script for a machine with one NVIDIA GPU (CI never has one):
#   finetune-lora  Wan2.1-T2V-1.3B-shaped pipeline (examples/wan_shaped_pipeline.py), LoRA rank 32 at 81x480x832,
#                  bf16, gradient checkpointing, ZeRO-2 over NCCL: cluster/finetune-wan-1.3b-lora.yaml on 1 worker
#   finetune-full  the same pipeline fully fine-tuned (ZeRO-2, 1 worker)
#   train-base     vidgen's own `base` preset on Ray Train + DeepSpeed (NCCL, bf16), 1 worker
# Usage: benchmarks/gpu_check.sh STAGE...   (stages: setup finetune-lora finetune-full train-base summary)
# Each stage logs to $OUT/STAGE.log; `summary` prints steps/s and peak GPU memory from every run's metrics.
# GPU_CHECK_SMALL=1 rehearses every stage on a CPU at toy sizes (2 transformer layers, 9x64x64 clips).
set -u
OUT=${OUT:-out/gpu-check}
WORK=${WORK:-/tmp/gpu-check}
VIDEOS=${VIDEOS:-.gpu/videos}   # from: python examples/test_videos.py .gpu/videos
mkdir -p "$OUT" "$WORK"
if [ "${GPU_CHECK_SMALL:-0}" = 1 ]; then
    LAYERS=2; SHAPE=(--frames 9 --height 64 --width 64); GPU=(); CPUS=1
    SMALL=(--set max_shape=null --set gradient_checkpointing=false --set use_gpu=false --set precision=float32)
    BASE=(--preset tiny); STEPS=3
else
    LAYERS=30; SHAPE=(--frames 81 --height 480 --width 832); GPU=(--gpu); CPUS=8; SMALL=()
    BASE=(--preset base); STEPS=20
fi
FINETUNE=(vidgen finetune --config cluster/finetune-wan-1.3b-lora.yaml --model "$WORK/wan" --data "$WORK/footage"
          --workers 1 "${GPU[@]}" --set "runs=$WORK/runs" --set "cpus_per_worker=$CPUS" --set gradient_accumulation=1
          --set validate_every=10 --set validation_batches=2 "${SMALL[@]}")

stage() {  # stage NAME COMMAND...: run it with its output in $OUT/NAME.log, one line in $OUT/summary.txt
    local name=$1 start rc
    shift
    start=$(date +%s)
    "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc in $(($(date +%s) - start)) s" | tee -a "$OUT/summary.txt"
    tail -n 4 "$OUT/$name.log"
}

for step in "$@"; do
    case $step in
    setup)
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
        stage pipeline python examples/wan_shaped_pipeline.py "$WORK/wan" --layers "$LAYERS"
        stage ingest vidgen data ingest "$VIDEOS" --captions "$VIDEOS/captions.csv" --out "$WORK/footage" \
            "${SHAPE[@]}" --fps 30 --stride 16 --eval-fraction 0.2 ;;
    finetune-lora)
        stage finetune-lora "${FINETUNE[@]}" --steps "$STEPS" --out "$WORK/lora" \
            --set 'validation_prompts=["a big rabbit in a forest, animated"]' --set validation_steps=8 ;;
    finetune-full)
        stage finetune-full "${FINETUNE[@]}" --full --steps $((STEPS / 2)) --out "$WORK/full" ;;
    train-base)
        stage train-base vidgen train "${BASE[@]}" --workers 1 "${GPU[@]}" --zero 2 --steps $((STEPS * 10)) \
            --set autoencoder_steps=$((STEPS * 10)) --runs "$WORK/runs" --out "$WORK/base-model" ;;
    summary)
        python benchmarks/gpu_summary.py "$WORK" | tee "$OUT/metrics.txt" ;;
    *) echo "unknown stage $step (setup finetune-lora finetune-full train-base summary)" >&2; exit 2 ;;
    esac
done

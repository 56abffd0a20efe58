#!/bin/bash
# Issue 25: the CamVid stack trained on one GPU from one prepared script (not yet run: no session has had a GPU).
#
#   bash bench/gpu_camvid_train.sh prepare   # here, on the CPU: the device folder .gpu/ (ignored by git)
#   bash bench/gpu_camvid_train.sh run       # there, through the device tool, with carry [".gpu"]
#
# prepare writes into .gpu/: the training pack (TAEF2 latents of the 355 training frames and their flips in
# float16, the label maps: scp_core.training.pack; the device machine has no CamVid), the two TAEF2 weight files
# and the wheel of diffusers (not installed there). run installs the wheel, trains the base UNet and the ControlNet
# with the one-GPU recipe (scp_core.training.recipes.GPU_RECIPES: bf16, EMA, 270 s + 150 s wall-clock budgets;
# the committed segmenter reused), and returns the zoo as one archive plus its facts: back here,
#   tar -xzf <files_at>/camvid_gpu.tgz          (in the repository root: zoo/camvid and runs/camvid/*/loss.csv)
#   .venv/bin/scpdiff train --profile camvid --device cuda --report-only   # evaluation and REPORT.md, on the CPU
#   .venv/bin/scpdiff reproduce --profile camvid
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    mkdir -p .gpu/whl
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    .venv/bin/scpdiff train --profile camvid --device cuda --write-pack .gpu/camvid.pack
    cp "${SCP_WEIGHTS_DIR:-weights}"/taef2_encoder.safetensors "${SCP_WEIGHTS_DIR:-weights}"/taef2_decoder.safetensors .gpu/
    diffusers=$(grep -o '"diffusers==[^"]*"' pyproject.toml | tr -d '"')
    .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/whl "$diffusers"
    du -sh .gpu
    ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD SCP_WEIGHTS_DIR=$PWD/.gpu PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    nvidia-smi --query-gpu=name,memory.total --format=csv
    start=$(date +%s)
    python3 -m scp_core.cli train --profile camvid --device cuda --pack .gpu/camvid.pack --out /tmp/zoo/camvid \
        --work /tmp/runs/camvid 2>&1 | tee "$OUT/train.log"
    echo "wall: $(( $(date +%s) - start )) s" | tee -a "$OUT/train.log"
    # zoo/camvid and the loss logs the report reads (runs/camvid/<stage>/loss.csv), as one archive
    mkdir -p /tmp/back/zoo /tmp/back/runs/camvid/unet /tmp/back/runs/camvid/controlnet
    mv /tmp/zoo/camvid /tmp/back/zoo/
    for stage in unet controlnet; do cp /tmp/runs/camvid/$stage/loss.csv /tmp/back/runs/camvid/$stage/; done
    tar -czf "$OUT/camvid_gpu.tgz" -C /tmp/back zoo runs
    cp /tmp/back/zoo/camvid/training_facts.json "$OUT/"
    ;;
  *)
    echo "usage: bash bench/gpu_camvid_train.sh prepare|run" >&2
    exit 2
    ;;
esac

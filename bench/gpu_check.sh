#!/usr/bin/env bash
# The GPU checks of issue 33 (item 2), prepared as one run for a lent GPU machine, where
# the image's python3 has torch, pytest, tqdm, numpy and pillow but not Prefect (none of
# this needs it). From the repository root, with the MNIST files in data/mnist (ignored by
# git; copy them there first, and name data/mnist in the device run's carry):
#
#     bash bench/gpu_check.sh          # about 5 minutes on an H200; results in $OUT
#
# 1. tests/models/test_gpu.py (bf16 training on CUDA serves CPU users);
# 2. `python -m bench --gpu-only`: denoising and training throughput on the GPU;
# 3. a sweep of batch sizes and learning rates for a GPU recipe with `bench.recipe`: each
#    line gives the seconds of each epoch's training and the MNIST test PSNR, to set
#    against the CPU recipe's 21.35 dB (13 epochs at batch 32 in bf16; the GPU then took
#    9.3-10.4 s an epoch). The target: an epoch under 1 s, quality within 0.1 dB.
set -u
export PYTHONUNBUFFERED=1 DENOISER_MNIST_DIR=${DENOISER_MNIST_DIR:-$PWD/data/mnist}
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/models/test_gpu.py 2>&1 | tee "$out/test_gpu.log"
timeout 180 python3 -m bench --gpu-only --json "$out/bench-gpu.json" 2>&1 | tail -20
# batch, learning rate, epochs: the rate grows with the batch (about as its square root),
# the epochs too, as fewer steps an epoch need more epochs for the same quality.
for cfg in "128 2e-3 13" "256 3e-3 20" "512 4e-3 30" "512 6e-3 30" "1024 6e-3 40" "1024 8e-3 40"; do
  set -- $cfg
  timeout 150 python3 -m bench.recipe unet --device cuda --precision bf16 --batch-size "$1" --lr "$2" \
    --epochs "$3" --json "$out/recipe-sweep.jsonl" 2>&1 | tail -1
done

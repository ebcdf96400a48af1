#!/usr/bin/env bash
# Two-GPU DDP run (torchrun, NCCL) of gka_tiny on the full Fashion-MNIST, for the device tool:
#   run(kind="nvidia-h200-x2", carry=[".whl"], command="bash scripts/gpu_ddp_fashion_mnist.sh")
# Needs: the 4 Fashion-MNIST IDX .gz files in shared/fashion-mnist/ (or FMNIST_SRC=...), and wheels in .whl/
# for what the image lacks: webdataset==1.0.2 braceexpand==0.1.7 omegaconf==2.4.0 timm==1.0.31
# (fvcore==0.1.5.post20221221 + yacs iopath termcolor only for eval.py's FLOP count).
# Writes to $OUT (default output/gpu_fmnist): env.log, shards.log, train.log, epochs.csv, steps.csv,
# summary.json, curves.png, config.yaml. Total wall time budget: under 8 minutes.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/gpu_fmnist}
SRC=${FMNIST_SRC:-shared/fashion-mnist}
EPOCHS=${EPOCHS:-12}
TIME_LIMIT_MIN=${TIME_LIMIT_MIN:-5.5}   # training stops after the epoch that would overrun this
NPROC=${NPROC:-2}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
. scripts/device_env.sh
install_carried_wheels "$SITE" || exit 1
use_repo_imports "$SITE"
python3 - <<'PY' 2>&1 | tee "$OUT/env.log" || exit 1
import torch, timm, webdataset, omegaconf, gka_vision
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count(),
      [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
print("timm", timm.__version__, "webdataset", webdataset.__version__, "omegaconf", omegaconf.__version__)
PY
t0=$(date +%s)
python3 -m gka_vision.tools.make_shards fashion-mnist --src "$SRC" --out /tmp/fmnist-wds --num-shards 16 \
    2>&1 | tee "$OUT/shards.log" || exit 1
echo "shards made in $(( $(date +%s) - t0 ))s" | tee -a "$OUT/shards.log"
RUN=/tmp/fmnist-run
set -x
timeout 450 torchrun --standalone --nproc_per_node="$NPROC" train.py --config configs/fashion_mnist/gka_tiny.yaml \
    data.root=/tmp/fmnist-wds output=$RUN sched.epochs="$EPOCHS" time_limit_min="$TIME_LIMIT_MIN" progress=false \
    "$@" 2>&1 | tee "$OUT/train.log"
rc=$?
set +x
for f in epochs.csv steps.csv summary.json curves.png config.yaml; do
    [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"
done
echo "total wall time $(( $(date +%s) - t0 ))s, train rc=$rc" | tee -a "$OUT/shards.log"
exit $rc

#!/usr/bin/env bash
# Accuracy study of issue 5 at equal budget on the full Fashion-MNIST (60k train / 10k test), for the device tool:
#   run(kind="nvidia-h200-x2", carry=[".whl"], command="bash scripts/gpu_fmnist_study.sh")
# 18 single-process train.py runs at once (configs/fashion_mnist/{gka_tiny,mamba_vim_tiny,deit_tiny,gkavision_tiny,
# mambavision_tiny,mambaout_femto}.yaml x seeds 0 1 2: the two pairs and the reference a user would pick instead
# beside each, deit_tiny and mambaout_femto), spread over the GPUs (CUDA_VISIBLE_DEVICES, round robin over a
# model-major list: 9 per GPU on 2 GPUs, every GPU gets both light and heavy models), same recipe, same epochs per
# group, same seeds. Then benchmarks/summarize_study.py writes the tables and the plots (curves; top-1 vs img/s).
# Everything (wheels, shards, training, packing) ends within STUDY_DEADLINE_S (default 550 s) of the start.
#
# Writes to $OUT (default output/fmnist_study), 6 files: study.md, study.json, study_curves.png, study_top1_vs_speed.png,
# study_runs.tar.gz (every run folder: train.log, epochs.csv, steps.csv, summary.json, config.yaml,
# curves.png, run_meta.json; plus env.json, shards.log; no checkpoints/weights), study.log (this script's log).
#
# Env knobs:
#   EPOCHS (default 4; 2 on one GPU, and in the dry run), EPOCHS_ISO / EPOCHS_HIER: epochs of the isotropic group (gka_tiny, mamba_vim_tiny, deit_tiny)
#       and of the hierarchical one (gkavision_tiny, mambavision_tiny, mambaout_femto) (default EPOCHS)
#   STUDY_MODELS (default "gka_tiny mamba_vim_tiny deit_tiny gkavision_tiny mambavision_tiny mambaout_femto"),
#       STUDY_SEEDS ("0 1 2")
#   STUDY_GPUS (default: number of GPUs nvidia-smi/torch sees; 0 = CPU), STUDY_WORKERS (data.num_workers, 2)
#   STUDY_TIME_LIMIT_MIN: train.py time_limit_min per run (default: so training ends ~8.5 min after start)
#   STUDY_DEADLINE_S (550): runs still alive then are killed (logs kept) so packing fits the 10-min call
#   STUDY_DRY=1: CPU dry run of the whole pipeline (200/100-image subset, 2 epochs, shrunk models)
#   FMNIST_SRC (shared/fashion-mnist), SITE (/tmp/site), STUDY_ROOT (/tmp/fmnist-study); extra args -> every train.py
set -o pipefail
T0=$(date +%s)
cd "$(dirname "$0")/.."
OUT=${OUT:-output/fmnist_study}
SRC=${FMNIST_SRC:-shared/fashion-mnist}
SITE=${SITE:-/tmp/site}
DRY=${STUDY_DRY:-0}
COMMAND="bash scripts/gpu_fmnist_study.sh $*"
for v in EPOCHS EPOCHS_ISO EPOCHS_HIER STUDY_MODELS STUDY_SEEDS STUDY_GPUS STUDY_WORKERS STUDY_TIME_LIMIT_MIN \
         STUDY_DEADLINE_S STUDY_DRY; do
    [ -n "${!v}" ] && COMMAND="$v=${!v} $COMMAND"
done
ROOT=${STUDY_ROOT:-/tmp/fmnist-study}
RUNS=$ROOT/runs
SHARDS=$ROOT/shards
DEADLINE_S=${STUDY_DEADLINE_S:-550}
MODELS=${STUDY_MODELS:-gka_tiny mamba_vim_tiny deit_tiny gkavision_tiny mambavision_tiny mambaout_femto}
SEEDS=${STUDY_SEEDS:-0 1 2}
WORKERS=${STUDY_WORKERS:-2}
[ "$DRY" = 1 ] && DEADLINE_S=${STUDY_DEADLINE_S:-400}
mkdir -p "$OUT" "$ROOT"
rm -rf "$RUNS" && mkdir -p "$RUNS"
LOG=$OUT/study.log
: > "$LOG"
say() { echo "[study +$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
say "command: $COMMAND"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}  # the runs share the cores

# ---- wheels (what the image lacks) into a --target dir; gka_vision from the repo root, gka_kernels = kernels/
. scripts/device_env.sh
if [ "$DRY" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
    install_carried_wheels "$SITE" >>"$LOG" 2>&1 || { say "pip install of .whl/ failed"; exit 1; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
use_repo_imports

# ---- environment record (also passed to the summariser for study.md's header)
rm -f "$ROOT/env.json"
python3 - "$ROOT/env.json" <<'PY' 2>&1 | tee -a "$LOG"
import datetime, json, os, platform, subprocess, sys
import torch, timm, gka_vision
env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
       "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "timm": timm.__version__, "cpu_count": os.cpu_count(), "host": platform.node()}
try:
    import triton
    env["triton"] = triton.__version__
except Exception as e:  # noqa: BLE001
    env["triton"] = f"not importable ({type(e).__name__})"
n = torch.cuda.device_count()
env["gpus"] = [torch.cuda.get_device_name(i) for i in range(n)]
env["hardware"] = (f"{n} x {env['gpus'][0]}" if n else "CPU only") + f", {os.cpu_count()} CPU cores"
try:
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                        "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
except Exception:  # noqa: BLE001
    pass
json.dump(env, open(sys.argv[1], "w"), indent=1)
print("env:", json.dumps(env))
PY
[ -s "$ROOT/env.json" ] || { say "environment check failed (imports)"; exit 1; }
if [ -z "$STUDY_GPUS" ]; then
    STUDY_GPUS=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['gpus']))" "$ROOT/env.json" 2>/dev/null || echo 0)
fi
say "GPUs used: $STUDY_GPUS"
# epochs: 4 where the 18 runs share two or more GPUs; on one H200 (18 runs sharing it) 2 epochs take ~6 min of the
# 10-minute call, so 2 there, to let the lr schedule finish (docs/results.md)
if [ -z "$EPOCHS" ]; then
    if [ "$DRY" = 1 ] || [ "$STUDY_GPUS" = 1 ]; then EPOCHS=2; else EPOCHS=4; fi
fi
EPOCHS_ISO=${EPOCHS_ISO:-$EPOCHS}
EPOCHS_HIER=${EPOCHS_HIER:-$EPOCHS}

# ---- shards, once (full set; the dry run takes a balanced subset)
t=$(date +%s)
if [ "$DRY" = 1 ]; then SUB=(--train-per-class 20 --test-per-class 10 --num-shards 4); else SUB=(--num-shards 16); fi
rm -rf "$SHARDS"
python3 -m gka_vision.tools.make_shards fashion-mnist --src "$SRC" --out "$SHARDS" "${SUB[@]}" \
    >"$ROOT/shards.log" 2>&1 || { cat "$ROOT/shards.log" | tee -a "$LOG"; say "make_shards failed"; exit 1; }
cat "$ROOT/shards.log" >>"$LOG"
say "shards made in $(( $(date +%s) - t ))s"

# ---- per-run time limit: training ends ~8-8.5 min after the start (+ each process's imports) (dry: 5 min), the rest is packing
elapsed=$(( $(date +%s) - T0 ))
if [ -z "$STUDY_TIME_LIMIT_MIN" ]; then
    end_s=480; [ "$DRY" = 1 ] && end_s=300
    STUDY_TIME_LIMIT_MIN=$(python3 -c "print(round(max(0.5, ($end_s - $elapsed) / 60), 2))")
fi
kill_after=$(( DEADLINE_S - elapsed )); [ $kill_after -lt 30 ] && kill_after=30

# dry run: the same configs with shrunk models and small images (model.kwargs keys merge into the config's)
dry_args() {
    case $1 in
        gka_tiny) echo "model.kwargs.embed_dim=32 model.kwargs.depth=1 model.kwargs.num_heads=2 model.kwargs.num_iter=3";;
        mamba_vim_tiny) echo "model.kwargs.embed_dim=32 model.kwargs.depth=1 model.kwargs.d_state=4";;
        gkavision_tiny|mambavision_tiny) echo "data.img_size=64 model.kwargs.dim=16 model.kwargs.in_dim=8 \
model.kwargs.depths=[1,1,1,1] model.kwargs.num_heads=[2,2,2,2] model.kwargs.window_size=[8,8,4,2] model.kwargs.d_state=4";;
        deit_tiny) echo "model.kwargs.embed_dim=32 model.kwargs.depth=1 model.kwargs.num_heads=2";;
        mambaout_femto) echo "data.img_size=64 model.kwargs.dims=[8,16,24,32] model.kwargs.depths=[1,1,1,1]";;
    esac
}

# ---- launch every run at once; round robin over the model-major job list spreads each model over the GPUs
i=0; pids=()
for m in $MODELS; do
    case $m in gkavision*|mambavision*|mambaout*) ep=$EPOCHS_HIER;; *) ep=$EPOCHS_ISO;; esac
    for s in $SEEDS; do
        d=$RUNS/${m}_s$s; mkdir -p "$d"
        gpu=none; envs=()
        if [ "$STUDY_GPUS" -gt 0 ] 2>/dev/null; then gpu=$(( i % STUDY_GPUS )); envs=(CUDA_VISIBLE_DEVICES=$gpu); fi
        args=(--config configs/fashion_mnist/$m.yaml data.root="$SHARDS" output="$d" seed=$s sched.epochs=$ep
              time_limit_min=$STUDY_TIME_LIMIT_MIN progress=false data.num_workers=$WORKERS verify_export=false
              checkpoint.save_every=1000)
        if [ "$DRY" = 1 ]; then
            args+=(data.batch_size=20 data.val_batch_size=50 data.shuffle_buffer=50 threads=1 $(dry_args "$m"))
            # the project's models take a scan backend; the plain timm references do not
            case $m in deit_tiny|mambaout_femto) ;; *) args+=(model.kwargs.backend=torch);; esac
        fi
        args+=("$@")
        echo "${envs[*]} python3 train.py ${args[*]}" > "$d/command.txt"
        (
            t1=$(date +%s.%N)
            env "${envs[@]}" timeout -k 10 "$kill_after" python3 train.py "${args[@]}" >"$d/train.log" 2>&1
            rc=$?
            t2=$(date +%s.%N)
            python3 -c "import json,sys; json.dump(dict(tag=sys.argv[1], seed=int(sys.argv[2]), gpu=sys.argv[3], \
rc=int(sys.argv[4]), wall_s=round(float(sys.argv[6])-float(sys.argv[5]),1), epochs=int(sys.argv[7]), \
time_limit_min=float(sys.argv[8])), open(sys.argv[9], 'w'), indent=1)" \
                "$m" "$s" "$gpu" "$rc" "$t1" "$t2" "$ep" "$STUDY_TIME_LIMIT_MIN" "$d/run_meta.json"
            echo "[study +$(( $(date +%s) - T0 ))s] ${m}_s$s (gpu $gpu) rc=$rc wall $(python3 -c "print(round($t2-$t1))")s: $(grep -E '^epoch [0-9]+: ' "$d/train.log" | tail -1)" >>"$LOG"
        ) &
        pids+=($!)
        say "launched ${m}_s$s on gpu $gpu: epochs $ep, time_limit_min $STUDY_TIME_LIMIT_MIN, kill after ${kill_after}s"
        i=$((i + 1))
    done
done
# GPU utilisation / memory and the CPU load every 20 s while the runs go (runs/monitor.log in the tarball)
(
    while true; do
        echo "+$(( $(date +%s) - T0 ))s load $(cut -d' ' -f1-3 /proc/loadavg)"
        nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
        sleep 20
    done
) >"$RUNS/monitor.log" 2>&1 &
mon=$!
for p in "${pids[@]}"; do wait "$p"; done
kill "$mon" 2>/dev/null
say "all ${#pids[@]} runs ended"

# ---- pack every run folder (crashed ones too), without checkpoints and weights
cp "$ROOT/env.json" "$ROOT/shards.log" "$RUNS/" 2>/dev/null
tar -C "$ROOT" -czf "$OUT/study_runs.tar.gz" --exclude='*.pth' --exclude='weights' --exclude='weights_ema' \
    --exclude='tensorboard' runs && say "packed $OUT/study_runs.tar.gz ($(du -h "$OUT/study_runs.tar.gz" | cut -f1))" \
    || say "tar failed"

# ---- summary
python3 benchmarks/summarize_study.py --runs "$RUNS" --out "$OUT" --env "$ROOT/env.json" --command "$COMMAND" \
    2>&1 | tee -a "$LOG"
src=$?
say "done: summariser rc=$src; total wall time $(( $(date +%s) - T0 ))s"
ls -la "$OUT" >>"$LOG"
bad=$(grep -l '"rc": [1-9]' "$RUNS"/*/run_meta.json 2>/dev/null | wc -l)
[ "$bad" -gt 0 ] && say "$bad run(s) exited non-zero (see study.md)"
exit $src

# The anchors of the GPU benchmarks (benchmarks/anchors.py) on the device machine. Source it from the repo root
# (bash) at the start of a device command whose carry names .anchors and .whl:
#
#     . scripts/gpu_anchors_env.sh && python3 benchmarks/anchors.py && ... ; wait_mamba_build 300 && ...
#
# - installs the carried fla-core wheels into their own folders, offline and without dependencies (einops is on
#   the image): .whl/fla041/*.whl -> /tmp/fla041, .whl/fla060/*.whl -> /tmp/fla060;
# - exports the GKA_ANCHOR_* variables benchmarks/anchors.py reads (the sites and the build folder keep values
#   already set);
# - starts the build of mamba_ssm's selective scan in the background, in its own session so that it outlives
#   the command on a warm machine (log /tmp/mamba_build/build.log, about 2.5 minutes on 16 cores), at low
#   priority and on part of the cores (MAX_JOBS, default 6; NVCC_THREADS, default 2). Launch-bound timings
#   taken while it runs are noisier: wait_mamba_build [SECONDS] first where that matters.
#
# .anchors/ (ignored by git, never committed) holds the fetched sources (for example `git archive HEAD
# csrc/selective_scan | tar -x -C .anchors/mamba` from a clone of state-spaces/mamba):
#   hybrid-model-factory/training/src/hmf/model/hybrid_zoo/layers/gated_kalmanet/ops/chebyshev/  the authors' kernels
#   flash-linear-attention/fla/ops/gka/                  fla's GKA port (main branch; not in fla-core 0.6.0)
#   mamba/csrc/selective_scan/                           mamba_ssm's CUDA selective scan
# The build recipe is benchmarks/build_mamba_selective_scan.py (GKA_ANCHOR_MAMBA_RECIPE overrides it).
# Sourcing twice on one machine reinstalls nothing and starts no second build.

GKA_ANCHOR_ROOT="$PWD/.anchors"
export GKA_ANCHOR_AUTHORS_DIR="$GKA_ANCHOR_ROOT/hybrid-model-factory"
export GKA_ANCHOR_FLA_DIR="$GKA_ANCHOR_ROOT/flash-linear-attention"
export GKA_ANCHOR_FLA041_SITE="${GKA_ANCHOR_FLA041_SITE:-/tmp/fla041}"
export GKA_ANCHOR_FLA060_SITE="${GKA_ANCHOR_FLA060_SITE:-/tmp/fla060}"
export GKA_ANCHOR_MAMBA_BUILD="${GKA_ANCHOR_MAMBA_BUILD:-/tmp/mamba_build}"
GKA_ANCHOR_MAMBA_RECIPE="${GKA_ANCHOR_MAMBA_RECIPE:-$PWD/benchmarks/build_mamba_selective_scan.py}"

# install_anchor_wheels: .whl/fla041/*.whl and .whl/fla060/*.whl into their sites (skipped where SITE/fla exists)
install_anchor_wheels() {
    local sub site
    for sub in fla041 fla060; do
        if [ $sub = fla041 ]; then site=$GKA_ANCHOR_FLA041_SITE; else site=$GKA_ANCHOR_FLA060_SITE; fi
        [ -d "$site/fla" ] && continue
        if ! ls .whl/$sub/*.whl >/dev/null 2>&1; then
            echo "gpu_anchors_env: no wheel in .whl/$sub (carry .whl)" >&2
            continue
        fi
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/$sub/*.whl \
            || echo "gpu_anchors_env: installing .whl/$sub failed" >&2
    done
}

# start_mamba_build: the background build of .anchors/mamba into $GKA_ANCHOR_MAMBA_BUILD (once per machine)
start_mamba_build() {
    local dir=$GKA_ANCHOR_MAMBA_BUILD pid
    if [ ! -f "$GKA_ANCHOR_MAMBA_RECIPE" ] || [ ! -d "$GKA_ANCHOR_ROOT/mamba/csrc/selective_scan" ]; then
        echo "gpu_anchors_env: no mamba sources in .anchors/mamba (carry .anchors) or no build recipe; no build" >&2
        return 0
    fi
    mkdir -p "$dir"
    ls "$dir"/selective_scan_cuda*.so >/dev/null 2>&1 && return 0
    pid=$(cat "$dir/pid" 2>/dev/null)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        return 0
    fi
    if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
        export CUDA_HOME=/usr/local/cuda
    fi
    MAX_JOBS=${MAX_JOBS:-6} NVCC_THREADS=${NVCC_THREADS:-2} TORCH_CUDA_ARCH_LIST=9.0 \
        setsid nohup nice -n 19 python3 "$GKA_ANCHOR_MAMBA_RECIPE" \
        "$GKA_ANCHOR_ROOT/mamba" "$dir" >"$dir/build.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
}

# wait_mamba_build [SECONDS]: wait (default 600 s) for the background build; 0 once selective_scan_cuda*.so exists,
# 1 (with the log's tail) when the build failed or is still running at the deadline
wait_mamba_build() {
    local dir=$GKA_ANCHOR_MAMBA_BUILD deadline=$((SECONDS + ${1:-600})) pid
    pid=$(cat "$dir/pid" 2>/dev/null)
    while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
        sleep 2
    done
    if ls "$dir"/selective_scan_cuda*.so >/dev/null 2>&1; then
        return 0
    fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "wait_mamba_build: still building after ${1:-600} s (log $dir/build.log)" >&2
    else
        echo "wait_mamba_build: no selective_scan_cuda built; end of $dir/build.log:" >&2
        tail -n 30 "$dir/build.log" >&2 2>/dev/null
    fi
    return 1
}

install_anchor_wheels
start_mamba_build

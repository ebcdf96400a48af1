# Shared set-up of the scripts/gpu_*.sh device scripts; source it from the repo root.
# The device image has torch, Triton and timm but nothing else, and no internet: the run carries wheels in .whl/.

# install_carried_wheels SITE: pip-install the wheels in .whl/ (if any) into --target SITE, offline.
install_carried_wheels() {
    ls .whl/*.whl >/dev/null 2>&1 || return 0
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$1" .whl/*.whl
}

# use_repo_imports [SITE]: import without installing: gka_vision from the repo root, gka_kernels = the kernels/
# folder (through a symlink); SITE, if given, goes first on PYTHONPATH.
use_repo_imports() {
    local linkdir
    linkdir=$(mktemp -d)
    ln -s "$PWD/kernels" "$linkdir/gka_kernels"
    export PYTHONPATH="${1:+$1:}$PWD:$linkdir${PYTHONPATH:+:$PYTHONPATH}"
}

# device_call_setup [SITE]: the prologue of a one-off device command (`. scripts/device_env.sh && device_call_setup`):
# the carried wheels into SITE (default /tmp/site; once per machine, so a warm machine skips it), then
# use_repo_imports SITE and unbuffered Python output. The pip log goes to SITE.log.
device_call_setup() {
    local site=${1:-/tmp/site}
    if [ ! -f "$site/.carried_wheels" ]; then
        mkdir -p "$site"
        if ! install_carried_wheels "$site" > "$site.log" 2>&1; then
            echo "device_call_setup: installing the wheels of .whl/ failed (log $site.log)" >&2
            return 1
        fi
        touch "$site/.carried_wheels"
    fi
    use_repo_imports "$site"
    export PYTHONUNBUFFERED=1
}

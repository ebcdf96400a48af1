# The default config's backward solve kernel compiles to the same SASS as before paired steps (commit 0a69eb7),
# for bf16 inputs, fp32 inputs, and fp32 inputs on the bf16 schedule (gka_tiny's fp32 q/k with bf16 v);
# run from the repository root on any machine with Triton's CUDA tools (no GPU). Usage: sass_identity.sh [COMMIT]
# compares both solve kernels of the checkout with those of COMMIT (default 0a69eb7).
set -e
R=docs/runs/2026-12-01_h200_paired_steps
git worktree add -q /tmp/gka_before "${1:-0a69eb7}"
S="schedule=bf16:15+2xbf16:12/bf16:12+2xbf16:12"
python $R/sass_dump.py . /tmp/now && python $R/sass_dump.py . /tmp/now_h "$S"
(cd /tmp/gka_before && python $OLDPWD/$R/sass_dump.py . /tmp/before && python $OLDPWD/$R/sass_dump.py . /tmp/before_h "$S")
for k in _fwd_solve_kernel _bwd_solve_kernel; do for d in bf16 fp32; do for p in "" _h; do
  cmp -s /tmp/now${p}_${k}_$d.sass /tmp/before${p}_${k}_$d.sass && echo "$k $d${p:+ (bf16 schedule)}: same SASS" \
    || echo "$k $d${p:+ (bf16 schedule)}: differs"
done; done; done
git worktree remove --force /tmp/gka_before

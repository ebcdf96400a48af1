# With exact_operands off (the default) the solve kernels compile to the same SASS as at commit fd006d1 (before the
# option), for bf16 and fp32 inputs and fp32 inputs on the bf16 schedule; run from the repository root on any machine
# with Triton's CUDA tools (no GPU). Uses the SASS dump of the paired-steps run.
set -e
R=docs/runs/2026-12-01_h200_paired_steps
git worktree add -q /tmp/gka_before fd006d1
S="schedule=bf16:15+2xbf16:12/bf16:12+2xbf16:12"
python $R/sass_dump.py . /tmp/now && python $R/sass_dump.py . /tmp/now_h "$S"
(cd /tmp/gka_before && python $OLDPWD/$R/sass_dump.py . /tmp/before && python $OLDPWD/$R/sass_dump.py . /tmp/before_h "$S")
for k in _fwd_solve_kernel _bwd_solve_kernel; do for d in bf16 fp32; do for p in "" _h; do
  cmp -s /tmp/now${p}_${k}_$d.sass /tmp/before${p}_${k}_$d.sass && echo "$k $d${p:+ (bf16 schedule)}: same SASS" \
    || echo "$k $d${p:+ (bf16 schedule)}: differs"
done; done; done
git worktree remove --force /tmp/gka_before

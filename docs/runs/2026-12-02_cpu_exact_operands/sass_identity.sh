# With exact_operands off (the default) the solve kernels compile to the same SASS as at commit fd006d1 (before the
# option), for bf16 and fp32 inputs and fp32 inputs on the bf16 schedule; run from the repository root on any machine
# with Triton's CUDA tools (no GPU). Uses the SASS dump of the paired-steps run.
bash docs/runs/2026-12-01_h200_paired_steps/sass_identity.sh fd006d1

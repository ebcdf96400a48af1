# The default config's solve kernels compile to the same SASS with the folded_steps option as at commit 1854f32
# (before it), for bf16 inputs, fp32 inputs, and fp32 inputs on the bf16 schedule; run from the repository root on
# any machine with Triton's CUDA tools (no GPU). Uses the SASS dump of the paired-steps run.
bash docs/runs/2026-12-01_h200_paired_steps/sass_identity.sh 1854f32

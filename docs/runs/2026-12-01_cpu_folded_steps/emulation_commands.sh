# The CPU emulation runs behind docs/kernels.md "Folded steps" (2026-12-01, 2-core CPU VM, torch 2.14.1); each
# writes the log named after it.
E=benchmarks/emulate_tf32_gka.py
python $E --inputs bf16 --seeds 2 --cases 1:0.5 16:0.5 33:0.5 197:0.5 197:0.02 197:w 577:w --schedules \
  "bf16:15+2xbf16:12/bf16:12+2xbf16:12" "bf16f:15+2xbf16f:12/bf16:12+2xbf16:12" "bf16f:15+2xbf16f:12/bf16f:12+2xbf16f:12" \
  > emulation_bf16_inputs.log
python $E --inputs fp32 --seeds 2 --cases 1:0.5 16:0.5 197:0.5 197:w --schedules "bf16:15+3xbf16:10/bf16:15+2xbf16:15" \
  "bf16f:15+3xbf16f:10/bf16:15+2xbf16:15" "bf16f:15+3xbf16f:10/bf16f:15+2xbf16f:15" > emulation_fp32_inputs.log
python $E --inputs bf16 --seeds 60 --cases 1:0.5 --schedules "bf16:15+2xbf16:12/bf16:12+2xbf16:12" \
  "bf16f:15+2xbf16f:12/bf16f:12+2xbf16f:12" > emulation_T1_bf16_60seeds.log
python $E --inputs fp32 --seeds 60 --cases 1:0.5 --schedules "bf16:15+3xbf16:10/bf16:15+2xbf16:15" \
  "bf16f:15+3xbf16f:10/bf16f:15+2xbf16f:15" > emulation_T1_fp32_60seeds.log
# their distributions over the seeds: python t1_summary.py LOG > t1_summary.log (both logs)
python $E --inputs bf16 --seeds 2 --cases 1:0.5 16:0.5 33:0.5 197:0.5 197:0.02 197:w 577:w --schedules \
  "bf16:15+2xbf16:12/bf16:12+2xbf16:12" "bf16:15+2xbf16:12/bf16:10+2xbf16:10" "bf16:12+2xbf16:10/bf16:12+2xbf16:12" \
  "bf16:12+2xbf16:10/bf16:10+2xbf16:10" > emulation_fewer_steps.log

# The CPU emulation runs behind docs/kernels.md "A shorter bf16-input schedule" (2026-12-02, 2-core CPU VM, torch
# 2.14.1), from the repository root; each writes the log named after it (folder docs/runs/2026-12-02_cpu_short_schedule).
E=benchmarks/emulate_tf32_gka.py
D=docs/runs/2026-12-02_cpu_short_schedule
CASES="1:0.5 16:0.5 33:0.5 197:0.5 197:0.02 197:w 577:w"
python $E --inputs bf16 --seeds 60 --cases 1:0.5 --schedules "bf16f:15+2xbf16f:12/bf16:12+2xbf16:12" \
  "bf16f:12+2xbf16f:10/bf16:10+2xbf16:10" > $D/emulation_T1_bf16_60seeds.log
python $E --inputs bf16 --seeds 2 --cases $CASES --schedules "bf16f:15+2xbf16f:12/bf16:12+2xbf16:12" \
  "bf16f:12+2xbf16f:10/bf16:10+2xbf16:10" > $D/emulation_bf16_inputs.log
S="bf16f:15+2xbf16f:12/bf16:12+2xbf16:10 bf16f:12+2xbf16f:12/bf16:12+2xbf16:12 bf16f:14+2xbf16f:11/bf16:11+2xbf16:11
   bf16f:15+2xbf16f:12/bf16:10+2xbf16:12 bf16f:13+2xbf16f:10/bf16:12+2xbf16:12"
python $E --inputs bf16 --seeds 60 --cases 1:0.5 --schedules $S > $D/emulation_T1_bf16_60seeds_more.log
python $E --inputs bf16 --seeds 2 --cases $CASES --schedules $S > $D/emulation_bf16_inputs_more.log
# the T = 1 distributions: python docs/runs/2026-12-01_cpu_folded_steps/t1_summary.py LOG (both T1 logs) > $D/t1_summary.log
# the two changes together (the candidate of docs/kernels.md)
S="bf16f:12+2xbf16f:12/bf16:10+2xbf16:12"
python $E --inputs bf16 --seeds 60 --cases 1:0.5 --schedules $S > $D/emulation_T1_bf16_60seeds_candidate.log
python $E --inputs bf16 --seeds 2 --cases $CASES --schedules $S > $D/emulation_bf16_inputs_candidate.log

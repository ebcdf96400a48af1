"""benchmarks/bench_gka_core.py's FLOP count (the TFLOP/s column) follows the kernels' tiles, tail tiles included."""
import pytest
import torch

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py

pytest.importorskip("triton")


def test_kernel_flops_count_the_tail_tile():
    bench = load_benchmark("bench_gka_core")

    def flops(T, variant="default"):
        bench.set_variant(variant)
        return bench.kernel_flops(2, T, 3, 64, torch.bfloat16)

    # T = 197: the 4th 64-token chunk of the forward and of the backward holds 5 tokens, each run on a
    # 16-row tile, which is what T = 5 runs on: the count is that of T = 192 (whole chunks) plus that of T = 5
    assert flops(197) == tuple(a + b for a, b in zip(flops(192), flops(5)))
    assert all(a < b for a, b in zip(flops(197), flops(197, "tail_tile=0")))
    assert flops(256) == flops(256, "tail_tile=0")  # no partial chunk, no tail tile


def test_profile_split_names_each_launch_of_a_kernel():
    bench = load_benchmark("bench_gka_core")
    # two iterations; the solve kernel launches twice an iteration (the split backward), the others once
    events = [("fwd", 10.0), ("solve", 100.0), ("solve", 30.0), ("states", 5.0)] * 2
    rows = bench.launch_split(events, 2)
    assert [label for _, label in rows] == ["solve [1/2]", "solve [2/2]", "fwd", "states"]
    assert [ms for ms, _ in rows] == pytest.approx([0.1, 0.03, 0.01, 0.005])
    with pytest.raises(ValueError, match="solve launched 5 times in 2 iterations"):
        bench.launch_split(events + [("solve", 1.0)], 2)

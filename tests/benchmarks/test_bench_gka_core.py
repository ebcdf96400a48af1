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

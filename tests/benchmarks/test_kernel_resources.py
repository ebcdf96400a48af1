"""benchmarks/kernel_resources.py: the SASS loop parser on a hand-written listing, and one real offline
compile of a GKA kernel for sm_90 (no GPU needed; skipped where Triton's CUDA tools are missing)."""
import os
import shutil
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py

_SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_3:
        /*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0020*/                   LDS.128 R16, [R2] ;
        /*0030*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0040*/                   STL [R1+0x10], R5 ;
        /*0050*/                   FFMA R4, R5, R6, R7 ;
        /*0060*/              @P0  BRA `(.L_x_3) ;
        /*0070*/                   STG.E [R20.64], R4 ;
        /*0080*/                   EXIT ;
"""


def test_loop_mix_counts_one_iteration():
    kr = load_benchmark("kernel_resources")
    total, loops = kr.loop_mix(_SASS)
    assert len(loops) == 1
    assert loops[0] == dict(mma=1, smem=1, barrier=1, spill=1, other=2, total=6)
    assert total["total"] == 9 and total["global"] == 1 and total["mma"] == 1


def _have_cuda_tools():
    try:
        import triton
    except ImportError:
        return False
    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return all((bindir / t).exists() or shutil.which(t) for t in ("ptxas", "cuobjdump", "nvdisasm"))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1" or not _have_cuda_tools(),
                    reason="needs Triton's CUDA tools (ptxas, cuobjdump, nvdisasm) and no interpreter")
def test_offline_compile_of_the_state_scan():
    kr = load_benchmark("kernel_resources")
    rows = kr.report(64, "bf16", 90, kernels=["_fwd_states_kernel"])
    assert [r["kernel"] for r in rows] == ["_fwd_states_kernel"]
    r = rows[0]
    assert 0 < r["regs"] <= 255 and r["programs_per_sm"] >= 1
    # the chunk loop of the scan does tensor-core products and global stores of the states
    assert any(lp["mma"] > 0 and lp["global"] > 0 for lp in r["loops"]), r["loops"]


# the solve kernels' launches that run Chebyshev steps at head dim 64 (the backward solve kernel's first launch)
_STEP_KERNELS = ["_fwd_solve_kernel", "_bwd_solve_kernel[part1]"]


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1" or not _have_cuda_tools(),
                    reason="needs Triton's CUDA tools (ptxas, cuobjdump, nvdisasm) and no interpreter")
@pytest.mark.parametrize("spec,paired", [("", {"_fwd_solve_kernel"}),
                                         ("paired_steps=both", {"_fwd_solve_kernel", "_bwd_solve_kernel"}),
                                         ("paired_steps=none", set())])
def test_paired_chebyshev_steps_update_the_iterates_in_place(spec, paired):
    """With paired steps (GKAKernelConfig.paired_steps, kernels/gka_chunk.py `_chebyshev`) a solve kernel's step
    loops hold no register rotation x_prev <- x <- x_new; one step per iteration copies both tiles, 9 to 65 moves an
    iteration at head dim 64 (2 per tile element a thread holds). The backward's steps run in the first of its solve
    kernel's two launches (64-token chunks, split: the default at head dim 64)."""
    kr = load_benchmark("kernel_resources")
    rows = kr.report(64, "bf16", 90, kernels=_STEP_KERNELS, spec=spec)
    assert [r["kernel"] for r in rows] == _STEP_KERNELS
    for r in rows:
        steps = [lp for lp in r["loops"] if lp.get("mma", 0) > 0]
        assert len(steps) == 4, r["loops"]   # first round and refinement rounds, on the full and the tail tile
        moves = [lp.get("move", 0) for lp in steps]
        if r["kernel"].split("[")[0] in paired:
            assert max(moves) <= 4, (r["kernel"], moves)
        else:
            assert min(moves) >= 9, (r["kernel"], moves)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1" or not _have_cuda_tools(),
                    reason="needs Triton's CUDA tools (ptxas, cuobjdump, nvdisasm) and no interpreter")
def test_folded_chebyshev_steps_issue_fewer_instructions():
    """Folded steps (GKAKernelConfig.folded_steps, `_chebyshev_step_folded`): no step loop of either solve kernel
    is longer than with the plain paired steps, at the same tensor-core work, and the forward's 64-row loops, whose
    elementwise work dominates, are at least 7 % shorter (head dim 64, bf16; offline SASS, 2026-12-01: 632 -> 542
    and 600 -> 540 instructions a two-step iteration)."""
    kr = load_benchmark("kernel_resources")
    plain, folded = (kr.report(64, "bf16", 90, kernels=_STEP_KERNELS, spec=s)
                     for s in ("paired_steps=both,folded_steps=none", "paired_steps=both,folded_steps=both"))
    for p, f in zip(plain, folded):
        steps_p, steps_f = ([lp for lp in r["loops"] if lp.get("mma", 0) > 0] for r in (p, f))
        assert len(steps_p) == len(steps_f) == 4, (p["loops"], f["loops"])
        for lp, lf in zip(steps_p, steps_f):
            assert lf["mma"] == lp["mma"], (p["kernel"], lp, lf)
            assert lf["total"] <= lp["total"], (p["kernel"], lp["total"], lf["total"])
        if p["kernel"] == "_fwd_solve_kernel":
            longest = sorted(range(4), key=lambda i: -steps_p[i]["total"])[:2]
            assert all(steps_f[i]["total"] < 0.93 * steps_p[i]["total"] for i in longest), (steps_p, steps_f)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1" or not _have_cuda_tools(),
                    reason="needs Triton's CUDA tools (ptxas, cuobjdump, nvdisasm) and no interpreter")
def test_exact_operands_issue_fewer_products():
    """exact_operands (the default) with bf16 inputs (GKAKernelConfig, `_dot`'s A_EXACT / B_EXACT): every kernel
    issues fewer tensor-core instructions and fewer instructions in all than with it off, and no loop issues more
    MMAs or grows by more than 3 % (head dim 64, offline SASS, 2026-12-02: the backward solve kernel 878 -> 678 MMA
    instructions, 17864 -> 16176 in all; the keys held as bf16 tiles, which exact operands also turn on, lengthen
    the forward solve's full-tile step loop 542 -> 556 and shorten its tail-tile loops, docs/kernels.md)."""
    kr = load_benchmark("kernel_resources")
    plain, exact = (kr.report(64, "bf16", 90, spec=s) for s in ("exact_operands=0", ""))
    assert [r["kernel"] for r in plain] == [r["kernel"] for r in exact] and len(plain) == 5  # the backward solve split
    for p, e in zip(plain, exact):
        assert e["sass"]["mma"] < p["sass"]["mma"] and e["sass"]["total"] < p["sass"]["total"], (p, e)
        assert len(e["loops"]) == len(p["loops"])
        for lp, le in zip(p["loops"], e["loops"]):
            assert le["total"] <= 1.03 * lp["total"] + 2 and le.get("mma", 0) <= lp.get("mma", 0), (p["kernel"], lp, le)

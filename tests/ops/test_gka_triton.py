"""GKA Triton kernels vs the float64 reference under TRITON_INTERPRET=1 (tiny fp32 cases, CPU).

The interpreter is chosen when kernels are decorated, so all interpreter cases run in one fresh
subprocess (chunk size 16, so T <= 40 spans several chunks and a masked tail) and never force
interpreter mode on other tests. Each case reports relative errors of the output and of every gradient
against autograd through gka_scan_reference (exact solve, docs/gka_spec.md sections 1 and 4).
"""
import textwrap

import pytest
import torch

from interpreted import run_interpreted, tagged_json  # tests/interpreted.py

pytest.importorskip("triton")

_SCRIPT = textwrap.dedent(r"""
    import json, torch
    torch.set_num_threads(1)
    from gka_kernels import gka_scan_triton, gka_scan_bidirectional_triton
    from gka_vision.ops import gka_scan, gka_scan_bidirectional
    from gka_vision.ops.gka_reference import gka_scan_reference

    def make(B, T, H, D, dtype, zero_keys=0, seed=0):
        gen = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=gen)
        q = torch.nn.functional.normalize(r(B, T, H, D), dim=-1)
        beta = torch.rand(B, T, H, 1, generator=gen)
        k = torch.nn.functional.normalize(r(B, T, H, D), dim=-1) * beta
        k[:, :zero_keys] = 0.0                          # H_t = 0 there: the ridge floor must hold
        v = r(B, T, H, D) * beta
        alpha = torch.rand(B, T, H, generator=gen)
        g = -0.5 * torch.rand(B, T, H, generator=gen)
        g2 = -0.5 * torch.rand(B, T, H, generator=gen)
        return [t.to(dtype) for t in (q, k, v, alpha)] + [g, g2]

    def rel(x, y):
        # the floor turns this into an absolute error where the exact gradient is zero (dg at T = 1)
        return ((x.double() - y.double()).norm() / y.double().norm().clamp_min(1e-3)).item()

    def ref_fn(mode, q, k, v, a, g, g2):
        d = [t.double() for t in (q, k, v, a, g, g2)]
        if mode == "bi":
            return 0.5 * (gka_scan_reference(*d[:5]) + gka_scan_reference(*d[:4], d[5], reverse=True))
        return gka_scan_reference(*d[:5], reverse=(mode == "rev"))

    def tri_fn(mode, api, cfg, q, k, v, a, g, g2):
        if api == "dispatch":       # through gka_vision.ops with backend="triton" (default kernel config)
            if mode == "bi":
                return gka_scan_bidirectional(q, k, v, a, g, g2, backend="triton")
            return gka_scan(q, k, v, a, g, reverse=(mode == "rev"), backend="triton")
        if mode == "bi":
            return gka_scan_bidirectional_triton(q, k, v, a, g, g2, sequential_backward=(api == "sequential"),
                                                 config=cfg)
        return gka_scan_triton(q, k, v, a, g, reverse=(mode == "rev"), config=cfg)

    cases = {
        # name: (mode, api, B, T, H, D, dtype, zero_keys)
        "fwd_T37_D16": ("fwd", "direct", 1, 37, 2, 16, torch.float32, 0),
        "rev_T37_D16": ("rev", "direct", 1, 37, 2, 16, torch.float32, 0),
        "bi_T40_D32": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        "bi_T40_D32_sequential": ("bi", "sequential", 2, 40, 1, 32, torch.float32, 0),
        "bi_T40_D32_no_prefetch": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        "bi_T40_D32_lean": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        "bi_T40_D32_split": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        "bi_T40_D32_split_lean": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        # Chebyshev steps paired (in place) in both solve kernels, and in neither (the default: the forward's)
        "bi_T40_D32_paired_both": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        "bi_T40_D32_paired_none": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        # folded Chebyshev steps (GKAKernelConfig.folded_steps) in both solve kernels (also at the default config) and
        # in neither (the default: the forward's)
        "bi_T40_D32_folded_both": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        "bi_T40_D32_folded_none": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        "fwd_T37_D16_folded_both": ("fwd", "direct", 1, 37, 2, 16, torch.float32, 0),
        "bi_T70_D40_default_folded": ("bi", "direct", 1, 70, 1, 40, torch.float32, 0),
        "fwd_T37_D16_lean": ("fwd", "direct", 1, 37, 2, 16, torch.float32, 0),
        "bi_T23_D20_dispatch": ("bi", "dispatch", 1, 23, 2, 20, torch.float32, 0),
        "rev_T16_D24_dispatch": ("rev", "dispatch", 1, 16, 1, 24, torch.float32, 0),
        "bi_T33_D16_zero_keys": ("bi", "direct", 1, 33, 1, 16, torch.float32, 5),
        "fwd_T1_D16": ("fwd", "direct", 1, 1, 1, 16, torch.float32, 0),
        "bi_T29_D16_fp16": ("bi", "direct", 1, 29, 1, 16, torch.float16, 0),
        # the forward on other chunks than the backward (GKAKernelConfig.fwd_chunk)
        "bi_T40_D32_fwd_chunk32": ("bi", "direct", 2, 40, 1, 32, torch.float32, 0),
        "fwd_T37_D16_fwd_chunk64": ("fwd", "direct", 1, 37, 2, 16, torch.float32, 0),
        # the default config at padded head dim 64: 64-token forward and 32-token backward chunks (2 and 3 here)
        "bi_T70_D40_default": ("bi", "direct", 1, 70, 1, 40, torch.float32, 0),
        # the same without the last chunks' 16-row tail tiles (6 tokens each)
        "bi_T70_D40_default_no_tail": ("bi", "direct", 1, 70, 1, 40, torch.float32, 0),
    }
    out = {}
    # 16-token chunks and 16-column state blocks: several chunks and several column programs of the state
    # scans at T <= 40, D >= 17; the default solve schedule
    from gka_kernels import GKAKernelConfig
    for name, (mode, api, B, T, H, D, dtype, zk) in cases.items():
        # no_prefetch: the state scans without their early loads
        # lean: the solves keep their right-hand side and running solution in memory
        # split: the backward solve kernel as two launches
        # fwd_chunkN: the forward's launches on N-token chunks, the backward's on 16
        cfg = GKAKernelConfig(chunk=16, state_cols=16, prefetch=not name.endswith("no_prefetch"),
                              lean_solve=name.endswith("lean"), split_backward="split" in name,
                              fwd_chunk=int(name.rsplit("fwd_chunk", 1)[1]) if "fwd_chunk" in name else None,
                              paired_steps=name.rsplit("paired_", 1)[1] if "paired_" in name else "fwd",
                              folded_steps=name.rsplit("folded_", 1)[1] if "folded_" in name else "fwd")
        if "default" in name:
            cfg = GKAKernelConfig(tail_tile=not name.endswith("no_tail"))
            cfg = cfg.replace(folded_steps="both") if "folded" in name else cfg
        ins = [t.requires_grad_() for t in make(B, T, H, D, dtype, zk)]
        o = tri_fn(mode, api, cfg, *ins)
        ref = ref_fn(mode, *ins)
        do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
        names = ["q", "k", "v", "alpha", "g"] + (["g_rev"] if mode == "bi" else [])
        leaves = ins[:len(names)]
        grads = torch.autograd.grad(o, leaves, do.to(o.dtype))
        grads_ref = torch.autograd.grad(ref, leaves, do.double())
        out[name] = dict(
            dtype=str(o.dtype), finite=bool(torch.isfinite(o).all()) and all(bool(torch.isfinite(x).all()) for x in grads),
            fwd=rel(o, ref), grads={n: rel(x, y) for n, x, y in zip(names, grads, grads_ref)},
            raw=[x.tolist() for x in [o] + list(grads)] if name.startswith(("bi_T40_D32", "bi_T70")) else None)
    # the gate-gradient kernel over several 16-position blocks (the scan kernels above use one block of 256)
    from gka_kernels.gka_chunk import _gate_grad_kernel
    gen = torch.Generator().manual_seed(3)
    B, T, H = 2, 37, 3
    dG, dgp = torch.randn(2, B, T, H, generator=gen), torch.randn(2, 2, B, T, H, generator=gen)
    d = dG - dgp.sum(0)
    want = torch.stack([d[0].flip(1).cumsum(1).flip(1), d[1].cumsum(1)])  # scan order: t up, then t down
    got = dG.clone()
    _gate_grad_kernel[(B * H, 2)](got, dgp, got, T, H, B * T * H, 2 * B * T * H, 0, NPART=2, BLOCK=16)
    out["gate_grad_blocks"] = (got - want).abs().max().item()
    print("RESULT" + json.dumps(out))
""")

_CASES = ["fwd_T37_D16", "rev_T37_D16", "bi_T40_D32", "bi_T40_D32_sequential", "bi_T40_D32_no_prefetch",
          "bi_T40_D32_lean", "fwd_T37_D16_lean", "bi_T40_D32_split", "bi_T40_D32_split_lean",
          "bi_T40_D32_paired_both", "bi_T40_D32_paired_none",
          "bi_T40_D32_folded_both", "bi_T40_D32_folded_none", "fwd_T37_D16_folded_both", "bi_T70_D40_default_folded",
          "bi_T23_D20_dispatch", "rev_T16_D24_dispatch",
          "bi_T33_D16_zero_keys", "fwd_T1_D16", "bi_T29_D16_fp16", "bi_T40_D32_fwd_chunk32", "fwd_T37_D16_fwd_chunk64",
          "bi_T70_D40_default", "bi_T70_D40_default_no_tail"]


@pytest.fixture(scope="module")
def interpreter_results():
    # the default solve schedule (several refinement rounds; the interpreter computes its bf16/tf32 products
    # in fp32, so this checks the step counts and the algebra)
    return tagged_json(run_interpreted(_SCRIPT), "RESULT")


@pytest.mark.slow  # the interpreter runs every case in one subprocess: about 20 s
@pytest.mark.parametrize("case", _CASES)
def test_triton_interpreter_matches_reference(interpreter_results, case):
    r = interpreter_results[case]
    assert r["finite"], f"{case}: NaN or inf in output or gradients"
    fp16 = "fp16" in case
    assert r["dtype"] == ("torch.float16" if fp16 else "torch.float32")
    # the interpreter computes dots in fp32; Chebyshev + one refinement round leave ~2e-5 (measured:
    # at most 4e-5, 2e-4 for dg at T = 1); fp16 inputs/outputs add their rounding
    fwd_tol, grad_tol = (1e-3, 2e-3) if fp16 else (1e-4, 5e-4)
    assert r["fwd"] < fwd_tol, f"{case}: forward rel. error {r['fwd']:.2e}"
    for name, err in r["grads"].items():
        # dg at T = 1 is exactly zero, and rel() reports it as the absolute error / 1e-3: the fp32 rounding residue
        # of read and write terms of the other gradients' size (O(1)), measured up to 4e-7 with plain Chebyshev steps
        # and 8e-7 with folded ones over 4 seeds: bounded at 2e-6 absolute
        tol = 2e-3 if (case.endswith("_T1_D16") and name == "g") else grad_tol
        assert err < tol, f"{case}: d{name} rel. error {err:.2e}"


@pytest.mark.slow
def test_triton_kernel_variants_equal_joint(interpreter_results):
    """sequential_backward=True (one backward launch set per direction, half the transient memory), the
    state scans without early loads (GKAKernelConfig(prefetch=False)), the lean solves (right-hand side and
    running solution in memory) and the split backward solve kernel give the same output and gradients as the
    default (same per-element arithmetic)."""
    joint = interpreter_results["bi_T40_D32"]["raw"]
    for other in ("bi_T40_D32_sequential", "bi_T40_D32_no_prefetch", "bi_T40_D32_lean", "bi_T40_D32_split",
                  "bi_T40_D32_split_lean"):
        for a, b in zip(joint, interpreter_results[other]["raw"]):
            a, b = torch.tensor(a), torch.tensor(b)
            assert torch.isfinite(b).all() and a.abs().max() > 0
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_triton_paired_steps_are_bit_identical(interpreter_results):
    """Chebyshev steps two per loop iteration with the iterates updated in place (GKAKernelConfig.paired_steps)
    run the same arithmetic in the same order as one step per iteration: the same bits, in the forward solve
    (the default pairs it) and in the backward one, with the default schedule's odd first round (15 steps)."""
    joint = interpreter_results["bi_T40_D32"]["raw"]
    for other in ("bi_T40_D32_paired_both", "bi_T40_D32_paired_none"):
        for a, b in zip(joint, interpreter_results[other]["raw"]):
            a, b = torch.tensor(a), torch.tensor(b)
            assert torch.isfinite(a).all() and a.abs().max() > 0
            assert torch.equal(a, b), other


@pytest.mark.slow
def test_triton_folded_steps_match_plain_steps(interpreter_results):
    """Folded Chebyshev steps (GKAKernelConfig.folded_steps) compute each step's value with other roundings: the
    same output and gradients as the plain steps to fp32 rounding (the interpreter's dots are fp32), not bit for
    bit (the values differ, so the folded path ran): none against the default's forward, none and the default
    against both."""
    for plain, folded in (("bi_T40_D32_folded_none", "bi_T40_D32"), ("bi_T40_D32_folded_none", "bi_T40_D32_folded_both"),
                          ("bi_T40_D32", "bi_T40_D32_folded_both"), ("bi_T70_D40_default", "bi_T70_D40_default_folded")):
        same = True
        for a, b in zip(interpreter_results[plain]["raw"], interpreter_results[folded]["raw"]):
            a, b = torch.tensor(a), torch.tensor(b)
            assert torch.isfinite(b).all() and a.abs().max() > 0
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
            same = same and torch.equal(a, b)
        assert not same, f"{folded}: bit for bit the plain steps' results"


@pytest.mark.slow
def test_triton_tail_tile_equals_full_tile(interpreter_results):
    """The last chunk on a 16-row tile (GKAKernelConfig.tail_tile, the default) computes what the full 64- and 32-row
    tiles compute: the extra rows are masked tokens (the same sums, other tile shapes)."""
    for a, b in zip(interpreter_results["bi_T70_D40_default"]["raw"],
                    interpreter_results["bi_T70_D40_default_no_tail"]["raw"]):
        a, b = torch.tensor(a), torch.tensor(b)
        assert torch.isfinite(a).all() and b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=3e-6)  # fp32 sums over other tile shapes


@pytest.mark.slow
def test_gate_grad_kernel_blocks(interpreter_results):
    """_gate_grad_kernel carries the sum over later scan positions across its blocks (both directions, in place)."""
    assert interpreter_results["gate_grad_blocks"] < 1e-5


def test_triton_ridge_floor_matches_reference():
    from gka_kernels.gka_chunk import RIDGE_FLOOR
    from gka_vision.ops.gka_reference import RIDGE_FLOOR as REF_FLOOR
    assert RIDGE_FLOOR == REF_FLOOR


def test_triton_bad_inputs_raise():
    from gka_kernels import gka_scan_bidirectional_triton, gka_scan_triton
    q = torch.randn(1, 8, 2, 16)
    a = torch.rand(1, 8, 2)
    g = -torch.rand(1, 8, 2)
    with pytest.raises(ValueError, match="k shape"):
        gka_scan_triton(q, q[:, :4], q, a, g)
    with pytest.raises(ValueError, match="alpha"):
        gka_scan_triton(q, q, q, a[:, :4], g)
    with pytest.raises(ValueError, match="gates"):
        gka_scan_triton(q, q, q, a, g[:, :4])
    with pytest.raises(ValueError, match="g_rev"):
        gka_scan_bidirectional_triton(q, q, q, a, g, g[:, :4])
    with pytest.raises(TypeError, match="float64"):
        gka_scan_triton(q.double(), q.double(), q.double(), a, g)
    with pytest.raises(ValueError, match="head dim"):
        big = torch.randn(1, 8, 1, 160)
        gka_scan_triton(big, big, big, a[:, :, :1], g[:, :, :1])


def test_solve_schedule_parsing():
    from gka_kernels.gka_function import default_config, parse_schedule
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        fwd, bwd = parse_schedule(default_config(dtype).schedule)
        assert fwd[1] >= 1 and bwd[1] >= 1
    assert parse_schedule("bf16:20+2xbf16:10/tf32:30") == [("bf16", 20, 2, "bf16", 10), ("tf32", 30, 0, "tf32", 0)]
    for bad in ("tf32:20", "fp8:20+1xtf32:10/tf32:20", "tf32:x+1xtf32:10/tf32:20", "tf32:20+1tf32:10/tf32:20",
                "tf32:0/tf32:30"):
        with pytest.raises(ValueError, match="solve schedule"):
            parse_schedule(bad)


def test_kernel_config_object():
    """The kernel config is an explicit, validated object; its spec string round-trips (the custom op and the
    benchmark pass it as text)."""
    from gka_kernels import GKAKernelConfig
    cfg = GKAKernelConfig(chunk=32, fwd_chunk=64, num_warps=8, prefetch=False,
                          schedule="bf16:20+2xbf16:12/bf16:20+2xbf16:15")
    assert GKAKernelConfig.from_spec(cfg.to_spec()) == cfg
    assert GKAKernelConfig().to_spec() == "" and GKAKernelConfig.from_spec("") == GKAKernelConfig()
    assert GKAKernelConfig.from_spec("max_regs=128,num_warps=none").max_regs == 128
    with pytest.raises(ValueError, match="unknown or malformed"):
        GKAKernelConfig.from_spec("chunks=32")
    with pytest.raises(ValueError, match="precision_hi"):
        GKAKernelConfig(precision_hi="fp8")
    with pytest.raises(ValueError, match="chunk"):
        GKAKernelConfig(chunk=24)
    with pytest.raises(ValueError, match="fwd_chunk"):
        GKAKernelConfig(fwd_chunk=8)
    with pytest.raises(ValueError, match="solve schedule"):
        GKAKernelConfig(schedule="bf16:15")
    assert GKAKernelConfig.from_spec("paired_steps=both").paired_steps == "both"
    with pytest.raises(ValueError, match="paired_steps"):
        GKAKernelConfig(paired_steps="all")
    assert GKAKernelConfig.from_spec("folded_steps=fwd").folded_steps == "fwd"
    with pytest.raises(ValueError, match="folded_steps"):
        GKAKernelConfig(folded_steps="yes")
    # every bool field parses to a bool, "0" included, and anything else is refused
    for key in ("prefetch", "lean_solve", "split_backward", "tail_tile", "exact_operands"):
        assert GKAKernelConfig.from_spec(f"{key}=1").replace() == GKAKernelConfig().replace(**{key: True})
        assert getattr(GKAKernelConfig.from_spec(f"{key}=0"), key) is False
        with pytest.raises(ValueError, match=key):
            GKAKernelConfig.from_spec(f"{key}=maybe")
    with pytest.raises(ValueError, match="exact_operands"):
        GKAKernelConfig(exact_operands="1")
    # split_backward: None (the default) chooses by the backward's chunk size; it parses from and prints as "none"
    assert GKAKernelConfig().split_backward is None
    assert GKAKernelConfig.from_spec("split_backward=none").split_backward is None
    assert GKAKernelConfig(split_backward=False).to_spec() == "split_backward=0"
    assert GKAKernelConfig.from_spec(GKAKernelConfig().to_spec(full=True)) == GKAKernelConfig()
    with pytest.raises(ValueError, match="split_backward"):
        GKAKernelConfig(split_backward="1")


def test_bf16x3_products_emulation():
    """bf16x3 (split bf16 hi/lo products) in the CPU emulation: accuracy of the product and the cost model
    (the kernels' "bf16x3" precision, gka_chunk._dot, runs only on a GPU: the interpreter's bf16 dots are wrong)."""
    from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py
    emu = load_benchmark("emulate_tf32_gka")

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 64, generator=gen), torch.randn(64, 64, generator=gen)
    ref = a.double() @ b.double()
    err = {p: ((emu.mm(a, b, p).double() - ref).norm() / ref.norm()).item()
           for p in ("bf16", "tf32", "bf16x3", "tf32x3")}
    assert err["tf32x3"] < err["bf16x3"] < err["tf32"] / 20 and err["bf16x3"] < 2e-5
    # cost model: the 20 non-solve backward products all bf16x3 = half their tf32x3 cost
    GP = emu.parse_grad_prec("grad=bf16x3,lo=bf16x3")
    assert sorted(GP) == sorted(emu.GROUPS["solve_kernel"]) and emu.dot_cost(GP)[0] * 2 == emu.dot_cost({})[1]
    assert set(emu.GROUPS["hi"]) == {"res_f", "res_b", "fro_kHk", "fro_KK", "fro_MKK", "ro_QK", "ro_S", "ro_V"}
    assert set(emu.GROUPS["scans"]) == {"fst_K", "fst_V", "st_RK", "st_dKg", "st_dV"}


def test_fp16_steps_emulation_scaled_system():
    """The emulation's fp16 Chebyshev steps run on a scaled system (docs/kernels.md, "fp16 Chebyshev steps"): keys
    1e3 times longer put A's entries past fp16's 65504, yet the output stays finite and as accurate as with unit keys;
    fp16 products alone are about 8x more accurate than bf16 ones."""
    from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py
    from gka_vision.ops.gka_reference import gka_scan_reference
    emu = load_benchmark("emulate_tf32_gka")
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 64, generator=gen), torch.randn(64, 64, generator=gen)
    ref = a.double() @ b.double()
    err = {p: ((emu.mm(a, b, p).double() - ref).norm() / ref.norm()).item() for p in ("bf16", "fp16")}
    assert err["fp16"] < err["bf16"] / 5
    sched = emu.parse_schedule("fp16:15+1xfp16:15/fp16:18+1xfp16:18")
    P = dict(loop="ieee", hi="bf16x3", states="bf16x3")
    errs = {}
    for scale in (1.0, 1e3):
        q, k, v, alpha, g = emu.inputs(1, 33, 1, 64, torch.float32, 0.5)
        k = k * scale
        do = torch.randn(1, 33, 1, 64, generator=torch.Generator().manual_seed(1))
        o, _ = emu.kernels(q, k, v, alpha, g, do, P, C=16, sched=sched)
        r = gka_scan_reference(*(t.double() for t in (q, k, v, alpha, g)))
        assert torch.isfinite(o).all()
        errs[scale] = ((o.double() - r).norm() / r.norm()).item()
    assert errs[1.0] < 2e-3 and errs[1e3] < 2e-3, errs
    # without the scaling, fp16 operands of that A overflow
    assert not torch.isfinite(emu.fp16(k[0, :, 0].T @ k[0, :, 0])).all()


def test_folded_steps_emulation():
    """The emulation's "bf16f" Chebyshev steps are the kernels' folded steps (docs/kernels.md "Folded steps") with bf16
    products: on T = 33 they give the output and gradients of the plain bf16 steps to within their own error (a
    different rounding, so not the same bits), both well inside the bf16 targets."""
    from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py
    from gka_vision.ops.gka_reference import gka_scan_reference
    emu = load_benchmark("emulate_tf32_gka")
    P = dict(loop="ieee", hi="bf16x3", states="bf16x3")
    ins = emu.inputs(1, 33, 1, 64, torch.float32, 0.5)
    do = torch.randn(1, 33, 1, 64, generator=torch.Generator().manual_seed(1))
    d = [t.double().requires_grad_() for t in ins]
    ref = gka_scan_reference(*d)
    gref = torch.autograd.grad(ref, d, do.double())
    rel = lambda x, y: ((x.double() - y).norm() / y.norm()).item()  # noqa: E731
    out = {}
    for form in ("bf16", "bf16f"):
        o, grads = emu.kernels(*ins, do, P, C=16, sched=emu.parse_schedule(f"{form}:15+2x{form}:12/{form}:12+2x{form}:12"))
        out[form] = (o, grads)
        assert rel(o, ref) < 1e-3 and max(rel(g, r) for g, r in zip(grads, gref)) < 3e-3, form
    assert not torch.equal(out["bf16"][0], out["bf16f"][0])
    assert rel(out["bf16f"][0], out["bf16"][0].double()) < 1e-3


def test_forward_and_backward_chunk_sizes(monkeypatch):
    """GKAKernelConfig.fwd_chunk sets the forward launches' chunk (its state scan and solve kernel, and the number
    of chunk programs); the backward's launches, including its recompute of the states, keep `chunk`."""
    import gka_kernels.gka_function as gkf

    launches = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            def launch(*args, **kw):
                launches.append((self.name, grid, kw.get("BC")))
            return launch

    for name in ("_fwd_states_kernel", "_fwd_solve_kernel", "_bwd_solve_kernel", "_bwd_states_kernel",
                 "_sum_directions_kernel", "_gate_grad_kernel"):
        monkeypatch.setattr(gkf, name, Recorder(name))
    monkeypatch.setattr(gkf, "INTERPRET", True)  # CPU tensors; no kernel runs
    B, T, H, D = 1, 100, 2, 32
    q = torch.randn(B, T, H, D)
    a, gates = torch.rand(B, T, H), -torch.rand(2, B, T, H)
    cfg = gkf.GKAKernelConfig(chunk=16, fwd_chunk=64)
    _, x, fro = gkf.gka_triton_forward(q, q, q, a, gates, config=cfg)
    gkf.gka_triton_backward(q, q, q, a, gates, x, fro, q, config=cfg)
    got = [(n, bc) for n, _, bc in launches if n not in ("_sum_directions_kernel", "_gate_grad_kernel")]
    assert got == [("_fwd_states_kernel", 64), ("_fwd_solve_kernel", 64),
                   ("_fwd_states_kernel", 16), ("_bwd_solve_kernel", 16), ("_bwd_states_kernel", 16)]
    grids = {n: g for n, g, _ in launches}
    assert grids["_fwd_solve_kernel"][0] == 2 and grids["_bwd_solve_kernel"][0] == 7  # ceil(100/64), ceil(100/16)
    assert grids["_gate_grad_kernel"] == (B * H, 2)  # one launch for the gate gradient of both directions


def _record_launches(monkeypatch, gkf, key):
    """Replace the kernels the host code launches by recorders: the returned dict maps each kernel's name to the
    `key` keyword of its first launch, or to the tuple of the keywords of a tuple `key` (no kernel runs; the host
    code runs as for the interpreter)."""
    seen = {}

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *args, **kw: seen.setdefault(
                self.name, tuple(kw.get(k) for k in key) if isinstance(key, tuple) else kw.get(key))

    for name in ("_fwd_states_kernel", "_fwd_solve_kernel", "_bwd_solve_kernel", "_bwd_states_kernel",
                 "_sum_directions_kernel", "_gate_grad_kernel"):
        monkeypatch.setattr(gkf, name, Recorder(name))
    monkeypatch.setattr(gkf, "INTERPRET", True)
    return seen


def test_tail_tile_rows(monkeypatch):
    """The last chunk of a solve launch runs on the smallest power-of-two tile (>= 16) that holds its tokens when that
    is at most half a chunk: at T = 197 on 64-token chunks a 16-row tile for its 5 tokens; tail_tile=False keeps the
    chunk's tile (TAIL = BC selects the single-tile kernel)."""
    import gka_kernels.gka_function as gkf
    assert [gkf.tail_rows(T, 64) for T in (197, 196, 213, 224, 230, 256, 5, 49)] == [16, 16, 32, 32, 64, 64, 16, 64]
    assert [gkf.tail_rows(T, 32) for T in (197, 210, 224, 1)] == [16, 32, 32, 16]
    assert gkf.tail_rows(197, 16) == 16 and gkf.tail_rows(197, 64, tail_tile=False) == 64

    tails = _record_launches(monkeypatch, gkf, "TAIL")
    q = torch.randn(1, 197, 1, 64)
    a, gates = torch.rand(1, 197, 1), -torch.rand(2, 1, 197, 1)
    for cfg, want in ((gkf.GKAKernelConfig(), (16, 16)), (gkf.GKAKernelConfig(tail_tile=False), (64, 64))):
        tails.clear()
        _, x, fro = gkf.gka_triton_forward(q, q, q, a, gates, config=cfg)
        gkf.gka_triton_backward(q, q, q, a, gates, x, fro, q, config=cfg)
        assert (tails["_fwd_solve_kernel"], tails["_bwd_solve_kernel"]) == want


@pytest.mark.parametrize("field, key, cases", [
    # by default the forward's steps are paired (measured faster on the H200), not the backward's (measured slower)
    ("paired_steps", "PAIRED", (("", (True, False)), ("both", (True, True)), ("bwd", (False, True)),
                                ("none", (False, False)))),
    # and the forward's are folded (measured faster on the H200), not the backward's (measured slower)
    ("folded_steps", "FOLDED", (("", (True, False)), ("none", (False, False)), ("both", (True, True)), ("fwd", (True, False)),
                                ("bwd", (False, True)))),
])
def test_step_options_per_solve_kernel(monkeypatch, field, key, cases):
    """GKAKernelConfig.paired_steps / folded_steps decide per solve kernel whether its Chebyshev steps run two per
    iteration (PAIRED) / folded (FOLDED) (docs/kernels.md "Paired steps", "Folded steps")."""
    import gka_kernels.gka_function as gkf
    seen = _record_launches(monkeypatch, gkf, key)
    q = torch.randn(1, 20, 1, 16)
    a, gates = torch.rand(1, 20, 1), -torch.rand(2, 1, 20, 1)
    for value, want in cases:
        seen.clear()
        cfg = gkf.GKAKernelConfig.from_spec(f"{field}={value}" if value else "")
        _, x, fro = gkf.gka_triton_forward(q, q, q, a, gates, config=cfg)
        gkf.gka_triton_backward(q, q, q, a, gates, x, fro, q, config=cfg)
        assert (seen["_fwd_solve_kernel"], seen["_bwd_solve_kernel"]) == want, (field, value)


def test_exact_operand_flags(monkeypatch):
    """GKAKernelConfig.exact_operands flags, per launch, the operands loaded from bf16 tensors (K_EXACT, V_EXACT, and
    DO_EXACT for the upstream gradient, whose 1/NDIR scaling keeps it exact); off by default, and never for fp32 or
    fp16 tensors; on by default (docs/kernels.md "Exact bf16 operands")."""
    import gka_kernels.gka_function as gkf
    seen = _record_launches(monkeypatch, gkf, ("K_EXACT", "V_EXACT", "DO_EXACT"))
    a, gates = torch.rand(1, 20, 1), -torch.rand(2, 1, 20, 1)
    bf, f32, f16 = (torch.randn(1, 20, 1, 16).to(d) for d in (torch.bfloat16, torch.float32, torch.float16))
    on, off = gkf.GKAKernelConfig(), gkf.GKAKernelConfig.from_spec("exact_operands=0")
    assert all(gkf.default_config(d).exact_operands for d in (torch.float32, torch.bfloat16, torch.float16))
    assert on.exact_operands and not off.exact_operands
    for (q, k, v, do), cfg, want in (
            ((bf, bf, bf, bf), on, (True, True, True)),
            ((f32, f32, bf, f32), on, (False, True, False)),  # fp32 q/k beside bf16 v: the output (q's dtype) is fp32
            ((f16, f16, f16, f16), on, (False, False, False)),
            ((bf, bf, bf, bf), None, (True, True, True)),  # default_config(bf16)
            ((bf, bf, bf, bf), off, (False, False, False))):
        seen.clear()
        _, x, fro = gkf.gka_triton_forward(q, k, v, a, gates, config=cfg)
        gkf.gka_triton_backward(q, k, v, a, gates, x, fro, do, config=cfg)
        assert seen["_fwd_states_kernel"][:2] == seen["_fwd_solve_kernel"][:2] == want[:2]
        assert seen["_bwd_solve_kernel"] == want and seen["_bwd_states_kernel"][:2] == want[:2], (cfg, want, seen)
    launch = gkf._Launch(on, 16)
    assert launch.exact_operand(bf, 0.5) and not launch.exact_operand(bf, 1.0 / 3.0)


def test_op_config_strings_override_the_inputs_default():
    """gka_scan's config: a spec string overrides fields of default_config(solve_dtype(q, k, v)) (bf16 inputs keep
    their schedule under "exact_operands=0"); a GKAKernelConfig object is used as it is, whatever the inputs."""
    from gka_kernels.gka_function import GKAKernelConfig, default_config
    from gka_vision.ops.gka_scan import _config_spec, _kernel_config
    bf16, f32 = torch.zeros(1, dtype=torch.bfloat16), torch.zeros(1)
    cfg = _kernel_config("exact_operands=0", f32, f32, bf16)
    assert cfg == default_config(torch.bfloat16).replace(exact_operands=False)
    assert _kernel_config("exact_operands=0", f32, f32, f32) == default_config(torch.float32).replace(
        exact_operands=False)
    assert _kernel_config("", bf16, bf16, bf16) is None  # the host code takes the inputs' default
    for obj in (GKAKernelConfig(), GKAKernelConfig(chunk=16), default_config(torch.bfloat16).replace(num_warps=8)):
        assert _kernel_config(_config_spec(obj), bf16, bf16, bf16) == obj
        assert _kernel_config(_config_spec(obj), f32, f32, f32) == obj


def test_default_config_follows_least_precise_input():
    """Under CUDA autocast F.normalize returns fp32 q and k beside a bf16 v: the bf16 schedule applies (the output
    feeds bf16 layers); all-fp32 inputs keep the fp32 one."""
    from gka_kernels.gka_function import default_config, solve_dtype
    f32, bf16, f16 = (torch.zeros(1, dtype=d) for d in (torch.float32, torch.bfloat16, torch.float16))
    assert solve_dtype(f32, f32, f32) == torch.float32
    assert solve_dtype(f32, f32, bf16) == torch.bfloat16 and solve_dtype(bf16, f32, f32) == torch.bfloat16
    assert solve_dtype(f32, f16, f32) == torch.float16
    half = default_config(solve_dtype(f32, f32, bf16))
    assert half == default_config(torch.bfloat16) != default_config(torch.float32)


def test_host_math_matches_triton():
    """The host code's plain-Python cdiv and next_power_of_2 give triton's values (grids, chunk counts, tile sizes)."""
    import triton
    from gka_kernels.host_math import cdiv, next_power_of_2
    for n in range(0, 5000):
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
        for d in (1, 3, 16, 64, 1024):
            assert cdiv(n, d) == triton.cdiv(n, d), (n, d)
    assert next_power_of_2(2 ** 40 + 1) == 2 ** 41 and cdiv(2 ** 40 + 1, 2 ** 20) == 2 ** 20 + 1


def test_host_code_does_not_call_triton_helpers():
    """The launch code uses gka_kernels.host_math, not triton.cdiv / triton.next_power_of_2 (in Triton 3.8 each call
    of those from host code costs a constexpr-function dispatch)."""
    import inspect
    import gka_kernels.gka_function as gkf
    import gka_kernels.selective_scan as ss
    for mod in (gkf, ss):
        src = inspect.getsource(mod)
        assert "triton.cdiv" not in src and "triton.next_power_of_2" not in src, mod.__name__


def test_default_chunks_by_head_dim():
    """64-token forward and backward chunks by default at padded head dim 64 (where the H200 measured them faster),
    16 elsewhere (at head dim 128 64-token chunks would need 160 KB of shared memory and spill); the backward solve
    kernel runs split in two launches where its chunks have 64 tokens or more (split_backward=None)."""
    from gka_kernels.gka_function import GKAKernelConfig, _Launch
    cfg = GKAKernelConfig()
    assert [(_Launch(cfg, D).BC_fwd, _Launch(cfg, D).BC) for D in (32, 40, 64, 128)] == [(16, 16), (64, 64),
                                                                                          (64, 64), (16, 16)]
    assert _Launch(cfg.replace(fwd_chunk=16), 64).BC_fwd == 16
    assert _Launch(cfg.replace(chunk=16), 64).BC == 16 and _Launch(cfg.replace(chunk=64), 32).BC_fwd == 64
    assert [_Launch(cfg, D).split for D in (32, 40, 64, 128)] == [False, True, True, False]
    assert not _Launch(cfg.replace(chunk=32), 64).split and _Launch(cfg.replace(chunk=64), 128).split
    assert not _Launch(cfg.replace(split_backward=False), 64).split
    assert _Launch(cfg.replace(split_backward=True), 128).split


def test_split_backward_launches(monkeypatch):
    """The default backward at padded head dim 64 launches the solve kernel twice (PART 1: read-out gradients and
    the second solve; PART 2: the covariance gradients) on 64-token chunks; with chunk=32 once (PART 0)."""
    import gka_kernels.gka_function as gkf
    launches = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *args, **kw: launches.append((self.name, grid[0], kw.get("BC"), kw.get("PART")))

    for name in ("_fwd_states_kernel", "_fwd_solve_kernel", "_bwd_solve_kernel", "_bwd_states_kernel",
                 "_sum_directions_kernel", "_gate_grad_kernel"):
        monkeypatch.setattr(gkf, name, Recorder(name))
    monkeypatch.setattr(gkf, "INTERPRET", True)  # CPU tensors; no kernel runs
    q = torch.randn(1, 197, 2, 40)
    a, gates = torch.rand(1, 197, 2), -torch.rand(2, 1, 197, 2)
    for cfg, want in ((gkf.GKAKernelConfig(), [(4, 64, 1), (4, 64, 2)]),
                      (gkf.GKAKernelConfig(chunk=32), [(7, 32, 0)])):
        launches.clear()
        _, x, fro = gkf.gka_triton_forward(q, q, q, a, gates, config=cfg)
        gkf.gka_triton_backward(q, q, q, a, gates, x, fro, q, config=cfg)
        assert [l[1:] for l in launches if l[0] == "_bwd_solve_kernel"] == want


def test_default_solve_steps_by_input_dtype():
    """fp32 inputs: 15 + 3 x 10 forward and 15 + 2 x 15 backward steps; bf16 / fp16 inputs, whose targets are 5x
    (forward) and 3x (gradients) looser: 15 + 2 x 12 and 12 + 2 x 12 (docs/kernels.md, "Precision by input dtype")."""
    from gka_kernels.gka_function import default_config, parse_schedule
    steps = lambda s: [(n1, r, n2) for _, n1, r, _, n2 in parse_schedule(s)]  # noqa: E731
    assert steps(default_config(torch.float32).schedule) == [(15, 3, 10), (15, 2, 15)]
    for dtype in (torch.bfloat16, torch.float16):
        assert steps(default_config(dtype).schedule) == [(15, 2, 12), (12, 2, 12)]

"""Compile the GKA Triton kernels for a CUDA GPU without one, and report what each costs statically.

For every kernel of kernels/gka_chunk.py at the configuration the host code would launch: registers per
thread, spilled bytes, shared memory, and per loop of its SASS (found by backward branches) the instruction
mix of one iteration: tensor-core MMAs, shared-memory loads/stores, barriers, spill traffic (local memory),
conversions, register copies, everything else. This is how to judge a kernel change on a CPU-only machine
before spending GPU time; it is not a timing (occupancy = programs per SM from registers and shared memory, the
only dynamic hint).

    python benchmarks/kernel_resources.py                       # D = 64, the default config, sm_90
    python benchmarks/kernel_resources.py --head-dim 128 --arch 90 --json out.json
    python benchmarks/kernel_resources.py --config num_warps=8,max_regs=128   # any GKAKernelConfig field

Needs Triton with its bundled ptxas / nvdisasm (the CUDA wheels ship them); no GPU, no driver.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Registers and shared memory per SM of Hopper (sm_90): 64K 32-bit registers, 228 KB shared (227 usable).
REGS_PER_SM = 65536
SMEM_PER_SM = 232448
MAX_THREADS_PER_SM = 2048


def _import_kernels():
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("kernel_resources.py compiles for a GPU: unset TRITON_INTERPRET")
    import triton  # noqa: F401
    from kernels import gka_chunk, gka_function
    return gka_chunk, gka_function


def _signature(fn, constexprs, ints=(), floats=()):
    """Triton signature dict: pointers fp32 unless named in `bf16_ptrs`; ints i32; floats fp32."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"
        elif name in floats:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def launch_of(D, input_dtype, spec=""):
    """The host code's resolved launch settings (gka_function._Launch) for head dim D, the input dtype's default
    kernel config and the GKAKernelConfig overrides in `spec`."""
    import torch
    _, gka_function = _import_kernels()
    base = gka_function.default_config(getattr(torch, _DTYPES[input_dtype]))
    return gka_function._Launch(gka_function.GKAKernelConfig.from_spec(spec, base), D)


def kernel_specs(D, input_dtype, spec="", tokens=197):
    """(name, jit fn, constexprs, num_warps, pointer dtypes) of the four kernels as the host code launches them for
    `tokens` tokens (which sets the solve kernels' tail tile, gka_function.tail_rows)."""
    gka_chunk, gka_function = _import_kernels()
    L = launch_of(D, input_dtype, spec)
    p1, _, _, p2, _ = L.iters(30, False)
    bp1, _, _, bp2, _ = L.iters(30, True)
    # exact_operands: the host flags bf16 inputs (q, k, v and the upstream gradient all have input_dtype here)
    is_exact = L.exact_operands and input_dtype == "bf16"
    exact = dict(K_EXACT=is_exact, V_EXACT=is_exact)
    in_ptrs = {"q_ptr", "k_ptr", "v_ptr", "a_ptr", "do_ptr"}
    specs = [
        ("_fwd_states_kernel", gka_chunk._fwd_states_kernel,
         dict(D=D, BD=L.BD, BC=L.BC_fwd, BN=L.BN, PREC=L.states, PREFETCH=L.prefetch, **exact)),
        ("_fwd_solve_kernel", gka_chunk._fwd_solve_kernel,
         dict(D=D, BD=L.BD, BC=L.BC_fwd, TAIL=gka_function.tail_rows(tokens, L.BC_fwd, L.tail_tile),
              PREC_FIRST=p1, PREC=p2, PREC_HI=L.hi, LEAN=L.lean, PAIRED=L.paired_fwd, FOLDED=L.folded_fwd,
              **exact)),
        ("_bwd_solve_kernel", gka_chunk._bwd_solve_kernel,
         dict(D=D, BD=L.BD, BC=L.BC, TAIL=gka_function.tail_rows(tokens, L.BC, L.tail_tile), PREC_FIRST=bp1,
              PREC=bp2, PREC_HI=L.hi, PREC_GRAD=L.grad, PREC_LO=L.lo, LEAN=L.lean, PART=0,
              PAIRED=L.paired_bwd, FOLDED=L.folded_bwd, DO_EXACT=is_exact, **exact)),
        ("_bwd_states_kernel", gka_chunk._bwd_states_kernel,
         dict(D=D, BD=L.BD, BC=L.BC, BN=L.BN, PREC=L.states, PREFETCH=L.prefetch, **exact)),
    ]
    if L.split:  # the backward solve kernel's two launches
        name, fn, cx = specs.pop(2)
        specs[2:2] = [(name + "[part1]", fn, dict(cx, PART=1)), (name + "[part2]", fn, dict(cx, PART=2))]
    floats = {"ridge_ratio", "ridge_floor", "fro2_floor", "scale", "out_scale"}
    out = []
    for name, fn, cx in specs:
        sig = _signature(fn, cx, floats=floats)
        for p in in_ptrs:
            if p in sig and input_dtype != "fp32":
                sig[p] = "*" + input_dtype
        out.append((name, fn, cx, L.warps if "solve" in name else L.state_warps, sig))
    return out


def compile_kernel(fn, sig, constexprs, num_warps, arch, maxnreg=None):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    src = ASTSource(fn, sig, constexprs=constexprs)
    opts = dict(num_warps=num_warps) if maxnreg is None else dict(num_warps=num_warps, maxnreg=maxnreg)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)


def _tool(name):
    import triton
    p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(p) if p.exists() else name


def sass_of(cubin):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([_tool("nvdisasm"), "-c", f.name], capture_output=True, text=True,
                              check=True).stdout


def resource_usage(cubin):
    """(registers per thread, stack bytes per thread = spills) from cuobjdump -res-usage."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return int(m.group(1)), int(m.group(2))


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH = re.compile(r"\bBRA\b.*`\((\.L_x_\d+)\)")


def _classify(op):
    base = op.split(".")[0]
    if base in ("HMMA", "HGMMA", "IMMA", "DMMA"):
        return "mma"
    if base in ("LDS", "STS", "LDSM", "STSM"):
        return "smem"
    if base in ("BAR", "WARPSYNC", "BSYNC", "SYNCS"):
        return "barrier"
    if base in ("LDL", "STL"):
        return "spill"
    if base in ("LDG", "STG", "LDGSTS", "UTMALDG", "RED", "ATOMG"):
        return "global"
    if base in ("F2F", "F2FP", "I2F", "F2I"):
        return "convert"
    if base in ("SHFL",):
        return "shuffle"
    if base == "MOV" or op.startswith("IMAD.MOV"):
        return "move"  # register copies (IMAD.MOV is how ptxas often spells one; UMOV, uniform registers, is not)
    return "other"


def loop_mix(sass):
    """Instruction mix of each innermost loop (label .. backward branch to it), in program order."""
    instrs, labels = [], {}
    for line in sass.splitlines():
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = len(instrs)
            continue
        m = _INSTR.search(line)
        if m:
            instrs.append((m.group(3), line))
    loops = []
    for i, (_, line) in enumerate(instrs):
        b = _BRANCH.search(line)
        if b and b.group(1) in labels and labels[b.group(1)] <= i:
            start = labels[b.group(1)]
            loops.append((start, i))
    # keep innermost: drop a loop that contains another
    inner = [lp for lp in loops if not any(o != lp and lp[0] <= o[0] and o[1] <= lp[1] for o in loops)]
    result = []
    for s, e in inner:
        mix = {}
        for op, _ in instrs[s:e + 1]:
            k = _classify(op)
            mix[k] = mix.get(k, 0) + 1
        mix["total"] = e - s + 1
        result.append(mix)
    total = {}
    for op, _ in instrs:
        k = _classify(op)
        total[k] = total.get(k, 0) + 1
    total["total"] = len(instrs)
    return total, result


def report(D, input_dtype, arch, kernels=None, spec="", tokens=197):
    max_regs = launch_of(D, input_dtype, spec).solve_opts.get("maxnreg")
    rows = []
    for name, fn, cx, warps, sig in kernel_specs(D, input_dtype, spec, tokens):
        if kernels and name not in kernels:
            continue
        k = compile_kernel(fn, sig, cx, warps, arch, max_regs if "solve" in name else None)
        regs, spills = resource_usage(k.asm["cubin"])
        smem = k.metadata.shared
        threads = 32 * warps
        occ = min(REGS_PER_SM // max(regs * threads, 1), SMEM_PER_SM // max(smem, 1) if smem else 99,
                  MAX_THREADS_PER_SM // threads)
        total, loops = loop_mix(sass_of(k.asm["cubin"]))
        rows.append(dict(kernel=name, warps=warps, regs=regs, spill_bytes=spills, smem=smem,
                         programs_per_sm=occ, sass=total, loops=loops, constexprs=cx))
    return rows


def _fmt_mix(m):
    keys = ("total", "mma", "smem", "barrier", "spill", "convert", "move", "global")
    return " ".join(f"{k}={m.get(k, 0)}" for k in keys)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"], help="q/k/v/alpha/do dtype")
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90 = H100/H200)")
    ap.add_argument("--kernels", nargs="*", default=None, help="only these (e.g. _fwd_solve_kernel)")
    ap.add_argument("--config", default="", help="GKAKernelConfig overrides, key=value,... (e.g. chunk=32)")
    ap.add_argument("--tokens", type=int, default=197, help="sequence length (sets the solve kernels' tail tile)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = report(args.head_dim, args.dtype, args.arch, args.kernels, args.config, args.tokens)
    for r in rows:
        print(f"{r['kernel']}: {r['warps']} warps, {r['regs']} regs, {r['spill_bytes']} B stack (spills), "
              f"{r['smem']} B smem, {r['programs_per_sm']} programs/SM")
        print(f"  whole kernel: {_fmt_mix(r['sass'])}")
        for i, m in enumerate(r["loops"]):
            print(f"  loop {i}: {_fmt_mix(m)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()

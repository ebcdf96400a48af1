"""Two revisions of the Triton GKA core side by side in one process: this checkout's kernels/ against another
revision's, at the same shapes, inputs and config.

    git archive <rev> kernels | tar -x -C /tmp/base            # the other revision's kernels/ folder
    python benchmarks/bench_kernel_revision.py --base /tmp/base [--shapes 128,197,6,64 ...] [--rounds 3]
    python benchmarks/bench_kernel_revision.py --base-rev HEAD~1   # the same, git archive run here

A kernel change that has no config field to turn it off is timed this way: the base's kernels/ folder is imported
as a second package (`gka_kernels_base`; its modules import each other relatively, so the copy is self-contained,
and Triton compiles its kernels apart, keyed by their source). For every shape both run the bidirectional scan,
forward and forward+backward, in alternating rounds (base, this, base, this, ...; median ms of
triton.testing.do_bench each round); the table gives the median over rounds and the ratio base / this. It also
prints how far this checkout's outputs and gradients are from the base's (relative error; 0 means the same
bits), so a change meant to keep the arithmetic shows that it did.
"""
import argparse
import atexit
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gka_kernels  # noqa: E402
from bench_gka_core import DEV, bench, make_inputs, rel  # noqa: E402

BASE_PACKAGE = "gka_kernels_base"


def fail(msg):
    """A user error: one line on stderr, exit code 2."""
    print(f"bench_kernel_revision: {msg}", file=sys.stderr)
    raise SystemExit(2)


GRAD_NAMES = ("q", "k", "v", "alpha", "g", "g_rev")


def load_base(base_dir):
    """Import base_dir/kernels as the package gka_kernels_base (exit 2 with one line where it is not one)."""
    pkg_dir = os.path.join(base_dir, "kernels")
    init = os.path.join(pkg_dir, "__init__.py")
    if not os.path.isfile(init):
        fail(f"{base_dir!r} holds no kernels/__init__.py "
             "(expected the output of `git archive <rev> kernels | tar -x -C DIR`)")
    if os.path.realpath(pkg_dir) == os.path.realpath(os.path.dirname(gka_kernels.__file__)):
        fail(f"{base_dir!r} is this checkout; give another revision's copy")
    spec = importlib.util.spec_from_file_location(BASE_PACKAGE, init, submodule_search_locations=[pkg_dir])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[BASE_PACKAGE] = mod
    spec.loader.exec_module(mod)
    return mod


def archive_rev(rev, repo):
    """git archive rev's kernels/ into a temporary folder (removed at exit); its path."""
    out = tempfile.mkdtemp(prefix="gka_base_")
    atexit.register(shutil.rmtree, out, True)
    try:
        tar = subprocess.run(["git", "-C", repo, "archive", rev, "kernels"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        msg = e.stderr.decode().strip().splitlines()[-1] if getattr(e, "stderr", None) else str(e)
        fail(f"git archive {rev!r} failed: {msg}")
    subprocess.run(["tar", "-x", "-C", out], input=tar, check=True)
    return out


def parse_shape(s):
    try:
        B, T, H, D = (int(x) for x in s.split(","))
    except ValueError:
        fail(f"shape {s!r}: expected B,T,H,D (four integers)")
    if min(B, T, H, D) < 1:
        fail(f"shape {s!r}: every size must be >= 1")
    return B, T, H, D


def scan_op(pkg, spec):
    """fn(q, k, v, alpha, g, g_rev) of pkg's bidirectional scan with the config spec on the inputs' default (resolved
    once per solve dtype, not inside the timed calls)."""
    configs = {}

    def fn(q, k, v, a, g, g2):
        dtype = pkg.solve_dtype(q, k, v)
        if dtype not in configs:
            configs[dtype] = pkg.GKAKernelConfig.from_spec(spec, pkg.default_config(dtype))
        return pkg.gka_scan_bidirectional_triton(q, k, v, a, g, g2, config=configs[dtype])
    return fn


def outputs_and_grads(fn, ins, do):
    for t in ins:
        t.grad = None
    o = fn(*ins)
    o.backward(do)
    res = [o.detach().clone()] + [t.grad.clone() for t in ins]
    for t in ins:
        t.grad = None
    return res


def agreement(fn_base, fn_this, ins, do):
    """{name: relative difference of this checkout's output / gradient from the base's}."""
    a = outputs_and_grads(fn_base, ins, do)
    b = outputs_and_grads(fn_this, ins, do)
    return {name: rel(y, x) for name, x, y in zip(("o",) + tuple("d" + n for n in GRAD_NAMES), a, b)}


def time_round(fn, ins, do):
    with torch.no_grad():
        t_f = bench(lambda: fn(*ins))
    t_fb = bench(lambda: fn(*ins).backward(do), grad_to_none=ins)
    return t_f, t_fb


def compare_shape(fn_base, fn_this, shape, dtype, rounds):
    ins = make_inputs(*shape, dtype)
    do = torch.randn_like(ins[2])
    times = {"base": [], "this": []}
    for _ in range(rounds):
        for name, fn in (("base", fn_base), ("this", fn_this)):
            times[name].append(time_round(fn, ins, do))
    med = {name: tuple(statistics.median(t[i] for t in ts) for i in (0, 1)) for name, ts in times.items()}
    return {"shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "rounds": rounds,
            "base_ms": {"fwd": med["base"][0], "fwd_bwd": med["base"][1]},
            "this_ms": {"fwd": med["this"][0], "fwd_bwd": med["this"][1]},
            "ratio": {"fwd": med["base"][0] / med["this"][0], "fwd_bwd": med["base"][1] / med["this"][1]},
            "rounds_ms": {name: [list(t) for t in ts] for name, ts in times.items()},
            "rel_diff": agreement(fn_base, fn_this, ins, do)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--base", help="a folder holding the other revision's kernels/ folder")
    src.add_argument("--base-rev", help="a git revision of this repository (git archive runs here)")
    ap.add_argument("--shapes", nargs="+", default=["128,197,6,64", "4,4097,6,64"], help="B,T,H,D")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--config", default="", help="GKAKernelConfig overrides key=value,... for both revisions")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per shape (>= 1)")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        fail(f"--rounds {args.rounds}: at least 1")
    shapes = [parse_shape(s) for s in args.shapes]
    if args.config:
        try:
            gka_kernels.GKAKernelConfig.from_spec(args.config)
        except ValueError as e:
            fail(str(e))
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    base_dir = args.base or archive_rev(args.base_rev, repo)
    base = load_base(base_dir)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    fn_base, fn_this = scan_op(base, args.config), scan_op(gka_kernels, args.config)
    dev = torch.cuda.get_device_name() if DEV == "cuda" else "cpu (TRITON_INTERPRET smoke test, not a timing)"
    print(f"# {dev}, torch {torch.__version__}, base {args.base or args.base_rev}, config {args.config or 'default'}, "
          f"{args.dtype}, {args.rounds} alternating rounds")
    print("| B,T,H,D | fwd base / this ms | ratio | fwd+bwd base / this ms | ratio | max rel diff (o, grads) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for shape in shapes:
        r = compare_shape(fn_base, fn_this, shape, dtype, args.rounds)
        rows.append(r)
        b, t, q = r["base_ms"], r["this_ms"], r["ratio"]
        vals = list(r["rel_diff"].values())
        diff = float("nan") if any(v != v for v in vals) else max(vals)  # NaN never reads as agreement
        print(f"| {','.join(map(str, shape))} | {b['fwd']:.3f} / {t['fwd']:.3f} | {q['fwd']:.3f}x | "
              f"{b['fwd_bwd']:.3f} / {t['fwd_bwd']:.3f} | {q['fwd_bwd']:.3f}x | {diff:.2e} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

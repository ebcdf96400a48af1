"""Host time of one GKA scan call, layer by layer of its call stack.

At a tiny shape the GPU work of a call is a few microseconds per kernel, so the time per call of a loop of calls is
the host's: the Python and the dispatch around the kernels. For each layer it reports the microseconds per call
until the loop has returned (host) and after a synchronize (wall; on CUDA, wall > host means the GPU was the
slower side after all):

    op fwd             torch.ops.gka_vision.gka_scan, no grad (the custom op the models and torch.compile call)
    op bwd             torch.ops.gka_vision.gka_scan_backward (what a compiled backward graph calls)
    scan fwd+bwd       gka_vision.ops.gka_scan forward and backward through autograd (the eager training path:
                       with the Triton backend, the ops' implementation through a plain autograd.Function)
    op fwd+bwd         the custom op forward and backward through its registered autograd (what the eager
                       training path called before; torch.compile's graphs call the ops instead)
    function fwd+bwd   gka_kernels.gka_scan_triton forward and backward (the kernels' autograd.Function: no
                       torch.library in between)
    launch fwd / bwd   gka_kernels.gka_triton_forward / gka_triton_backward (the launch code alone)
    torch.empty        one allocation, for scale

    python benchmarks/host_overhead.py                      # CUDA, the kernels run
    python benchmarks/host_overhead.py --stub-kernels       # CUDA, kernel launches replaced by no-ops
    python benchmarks/host_overhead.py --device cpu         # a CPU: TRITON_INTERPRET=1, launches always stubbed

--stub-kernels takes Triton's own launch path out (what is left is this project's Python and torch's dispatch);
on a CPU the kernels could only run in the interpreter, so they are always stubbed there. --json writes the rows.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

KERNELS = ("_fwd_states_kernel", "_fwd_solve_kernel", "_bwd_solve_kernel", "_bwd_states_kernel",
           "_sum_directions_kernel", "_gate_grad_kernel")


def _stub_kernels(gkf):
    """Replace the kernels that the launch code of gka_kernels.gka_function calls by launches that do nothing."""
    class _NoLaunch:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None
    for name in KERNELS:
        setattr(gkf, name, _NoLaunch())


def per_call_us(fn, iters, sync):
    """(host us, wall us) per call of fn over `iters` calls, after warm-up calls; the best of 5 rounds."""
    for _ in range(max(5, iters // 10)):
        fn()
    sync()
    host = wall = float("inf")
    n = max(1, iters // 5)
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        host, wall = min(host, (t1 - t0) / n * 1e6), min(wall, (t2 - t0) / n * 1e6)
    return round(host, 1), round(wall, 1)


def measure(device, shape, bidirectional, stub, iters):
    import torch
    import gka_vision  # noqa: F401  (registers the ops)
    import gka_kernels.gka_function as gkf
    from gka_vision.ops import gka_scan, gka_scan_bidirectional
    if stub:
        _stub_kernels(gkf)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    B, T, H, D = shape
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, generator=gen).to(dev, torch.bfloat16) for _ in range(3))
    q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    alpha = torch.rand(B, T, H, generator=gen).to(dev)
    g = (-torch.rand(B, T, H, generator=gen)).to(dev)
    do = torch.randn(B, T, H, D, generator=gen).to(dev, torch.bfloat16)
    scale = D ** -0.5
    ndir = 2 if bidirectional else 1
    gates = torch.stack([g, g]) if bidirectional else g.unsqueeze(0).contiguous()
    _, x, fro = gkf.gka_triton_forward(q, k, v, alpha, gates)  # what the backward calls take
    rows = {}
    with torch.no_grad():
        if bidirectional:
            rows["op fwd"] = per_call_us(lambda: torch.ops.gka_vision.gka_scan_bidirectional(
                q, k, v, alpha, g, g, 0.02, 30, scale, False, "triton", ""), iters, sync)
        else:
            rows["op fwd"] = per_call_us(lambda: torch.ops.gka_vision.gka_scan(
                q, k, v, alpha, g, None, 0.02, 30, scale, False, "triton", ""), iters, sync)
        rows["op bwd"] = per_call_us(lambda: torch.ops.gka_vision.gka_scan_backward(
            do, q, k, v, alpha, gates, None, x, fro, 0, 0.02, 30, scale, False, "triton", ""), iters, sync)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, alpha, g)]
    if bidirectional:
        g_rev = g.clone().requires_grad_()
        scan = lambda: gka_scan_bidirectional(*leaves, g_rev, backend="triton")  # noqa: E731
        function = lambda: gkf.gka_scan_bidirectional_triton(*leaves, g_rev)  # noqa: E731
    else:
        scan = lambda: gka_scan(*leaves, backend="triton")  # noqa: E731
        function = lambda: gkf.gka_scan_triton(*leaves)  # noqa: E731
    rows["scan fwd+bwd"] = per_call_us(lambda: scan().backward(do), iters, sync)
    if bidirectional:
        op = lambda: torch.ops.gka_vision.gka_scan_bidirectional(  # noqa: E731
            *leaves, g_rev, 0.02, 30, scale, False, "triton", "")[0]
    else:
        op = lambda: torch.ops.gka_vision.gka_scan(*leaves, None, 0.02, 30, scale, False, "triton", "")[0]  # noqa: E731
    rows["op fwd+bwd"] = per_call_us(lambda: op().backward(do), iters, sync)
    rows["function fwd+bwd"] = per_call_us(lambda: function().backward(do), iters, sync)
    with torch.no_grad():
        rows["launch fwd"] = per_call_us(lambda: gkf.gka_triton_forward(q, k, v, alpha, gates), iters, sync)
        rows["launch bwd"] = per_call_us(lambda: gkf.gka_triton_backward(q, k, v, alpha, gates, x, fro, do), iters,
                                         sync)
        rows["torch.empty"] = per_call_us(lambda: torch.empty(ndir, B, T, H, D, device=dev), iters, sync)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda (the default where available) or cpu")
    p.add_argument("--shape", default="1,64,2,64", help="B,T,H,D of the scan (small: the host's time is measured)")
    p.add_argument("--bidirectional", action="store_true", help="the bidirectional op instead of the causal one")
    p.add_argument("--stub-kernels", action="store_true", help="replace the kernel launches by no-ops (CUDA)")
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    try:
        shape = tuple(int(s) for s in args.shape.split(","))
        if len(shape) != 4 or min(shape) < 1:
            raise ValueError
    except ValueError:
        p.error(f"--shape {args.shape!r}: expected four positive integers B,T,H,D")
    if args.iters < 5:
        p.error("--iters must be at least 5")
    device = args.device
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cuda", "cpu"):
        p.error(f"--device {device!r}: cuda or cpu")
    stub = args.stub_kernels or device == "cpu"
    if device == "cpu":
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            p.error("--device cpu needs TRITON_INTERPRET=1 before triton is imported")
        os.environ["TRITON_INTERPRET"] = "1"  # the launch code's CPU checks; no kernel runs (stubbed)
    import torch
    import triton
    rows = measure(device, shape, args.bidirectional, stub, args.iters)
    meta = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu", torch=torch.__version__,
                triton=triton.__version__, shape=list(shape), bidirectional=args.bidirectional, stub_kernels=stub,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), command=" ".join(sys.argv))
    print(json.dumps(meta))
    print("\n| call | host us | wall us |\n|---|---|---|")
    for name, (host, wall) in rows.items():
        print(f"| {name} | {host} | {wall} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(meta, rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    main()

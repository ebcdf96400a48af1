"""Where the time of one training step goes: GPU time in the scan kernels, GPU time elsewhere, wall time.

    python benchmarks/profile_step.py --models gka_tiny_patch16_224 deit_tiny_patch16_224 --batch 128 [--compile]

For each model: a training step (forward, cross-entropy, backward, fused AdamW; bf16 autocast) is warmed up,
then `--steps` steps run under torch.profiler. Reported per step: wall time (host clock around the steps, after a
synchronize), GPU kernel time (sum of the device time of every kernel), the part of it in the scan kernels
(the project's Triton kernels: GKA, selective scan, and mamba_ssm's CUDA scan if used) and the rest, the number of
kernel launches, and the top kernels outside the scans. GPU time < wall time means the GPU idles (launch-bound).
--host adds a profile of the host side: the host time of the step's phases (forward, backward, optimizer) and
the host events with the most self time (Python-side op dispatch, kernel launch calls). Each row also counts the
calls per step that make the host wait for the GPU (synchronisations, blocking copies, cudaMalloc / cudaFree:
`blocking_calls`). --ops N adds the N host ops (with their input shapes) that launched the most GPU time:
which PyTorch op runs each kernel. --json writes the numbers.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import record_function

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import timm  # noqa: E402
import gka_vision  # noqa: E402,F401  (registers the models)

# kernel-name prefixes of the scans (kernels/gka_chunk.py, kernels/selective_scan.py, mamba_ssm)
SCAN_KERNELS = ("_fwd_states_kernel", "_fwd_solve_kernel", "_bwd_solve_kernel", "_bwd_states_kernel",
                "_sum_directions_kernel", "_gate_grad_kernel", "_ssm_fwd_kernel", "_ssm_bwd_kernel",
                "void selective_scan")


def is_scan_kernel(name: str) -> bool:
    return name.startswith(SCAN_KERNELS)


def split_kernel_times(events, steps: int):
    """(total GPU ms, scan ms, other ms, launches, [(ms, name) of the other kernels, largest first], [(ms, name) of
    the scan kernels, largest first]) per step, from the key averages of a CUDA-only profile (kernels, copies and
    memsets; host events have no device time). The scan kernels' names also say which implementation ran (the
    project's Triton kernels or mamba_ssm's CUDA selective scan)."""
    total = scan = 0.0
    launches = 0
    others, scans = [], []
    for e in events:
        t = getattr(e, "device_time_total", None)
        if t is None:
            t = getattr(e, "cuda_time_total", 0.0)
        if not t:  # host-side events (launch calls) carry no device time
            continue
        ms = t / 1e3 / steps
        total += ms
        launches += e.count
        if is_scan_kernel(e.key):
            scan += ms
            scans.append((ms, e.key))
        else:
            others.append((ms, e.key))
    return total, scan, total - scan, launches / steps, sorted(others, reverse=True), sorted(scans, reverse=True)


# CUDA runtime / driver calls that make the host wait for the device (synchronisations, blocking copies) or that
# allocate / free device memory (cudaFree also synchronises): counted per step, a step without them keeps the
# host ahead of the GPU
BLOCKING_CALLS = frozenset({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
                            "cudaMalloc", "cudaFree", "cudaHostAlloc", "cudaFreeHost", "cuStreamSynchronize",
                            "cuCtxSynchronize", "cuEventSynchronize", "cuMemAlloc_v2", "cuMemFree_v2"})


def blocking_calls(events, steps: int):
    """{call name: calls per step} of the BLOCKING_CALLS in the key averages of a profile (host-side runtime events).
    The profile's own synchronisations count too: on the H200 (torch 2.11) profile_model's CUDA profile of three
    steps held two cudaDeviceSynchronize in all, one of them its closing torch.cuda.synchronize(); an empty dict
    means the profile recorded no runtime events."""
    return {e.key: e.count / steps for e in events if e.key in BLOCKING_CALLS and e.count}


CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that record CUDA graphs


def warmup_steps(warmup: int, compile_mode) -> int:
    """Untimed steps before the timed ones: at least one, and at least two in the CUDA-graph modes, whose first two
    calls run the model eagerly and then record the graphs (a recording step is several replays long)."""
    return max(warmup, 2 if compile_mode in CUDAGRAPH_MODES else 1)


def train_step_fn(model, batch, res, device, dtype, cudagraphs=False):
    x = torch.randn(batch, 3, res, res, device=device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step():
        # the ranges name the phases in a host profile (--host); outside a profile they cost nothing measurable
        with record_function("phase:forward"):
            if cudagraphs:  # a new training iteration: the graphs may reuse the last step's output memory
                torch.compiler.cudagraph_mark_step_begin()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype):
                loss = F.cross_entropy(model(x).float(), y)
        with record_function("phase:backward"):
            loss.backward()
        with record_function("phase:optimizer"):
            opt.step()
        return loss.detach()
    return step


def host_breakdown(events, steps: int, top: int = 15):
    """(host ms per step of each phase range, [(self host ms, calls, name) per step, largest first]) from the key
    averages of a CPU profile: where the host spends a step (which ops dispatch slowly, how much is launch calls)."""
    phases, selfs = {}, []
    for e in events:
        if e.key.startswith("phase:"):
            phases[e.key[6:]] = e.cpu_time_total / 1e3 / steps
        elif e.self_cpu_time_total:
            selfs.append((e.self_cpu_time_total / 1e3 / steps, e.count / steps, e.key))
    selfs.sort(reverse=True)
    return phases, [(round(ms, 3), round(n, 1), name[:80]) for ms, n, name in selfs[:top]]


def op_breakdown(events, steps: int, top: int):
    """[(device ms, calls, op name, input shapes) per step, largest first] of the host ops that launched the GPU
    work themselves (their self device time), from the key averages of a CPU+CUDA profile with the input shapes
    recorded and grouped by them: which PyTorch op, on which shapes, runs each kernel of `top_other`."""
    rows = []
    for e in events:
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0.0)
        if t and e.device_type == torch.autograd.DeviceType.CPU:
            shapes = str(getattr(e, "input_shapes", ""))
            rows.append((t / 1e3 / steps, e.count / steps, e.key, shapes if len(shapes) <= 120 else shapes[:117] + "..."))
    rows.sort(reverse=True)
    return [(round(ms, 3), round(n, 1), name[:60], shapes) for ms, n, name, shapes in rows[:top]]


def profile_model(name, batch, res, steps, warmup, compile_mode, device, dtype, kwargs, host=False, ops=0):
    from torch.profiler import ProfilerActivity, profile
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).to(device).train()
    if compile_mode:
        model = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)
    step = train_step_fn(model, batch, res, device, dtype, cudagraphs=compile_mode in CUDAGRAPH_MODES)
    t0 = time.perf_counter()
    for _ in range(warmup_steps(warmup, compile_mode)):
        loss = step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{name}: non-finite loss after warm-up")
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    total, scan, other, launches, others, scans = split_kernel_times(prof.key_averages(), steps)
    row = dict(model=name, batch=batch, res=res, compile=compile_mode or "eager", wall_ms=wall_ms,
               img_s=batch * 1e3 / wall_ms, gpu_ms=total, scan_ms=scan, other_ms=other, launches=launches,
               gpu_busy=total / wall_ms, warmup_s=warmup_s, scan_kernels=[(round(t, 3), n[:60]) for t, n in scans],
               top_other=[(round(t, 3), n[:80]) for t, n in others[:8]],
               blocking_calls=blocking_calls(prof.key_averages(), steps))
    if host:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
            torch.cuda.synchronize()
        row["host_phase_ms"], row["host_top_self"] = host_breakdown(prof.key_averages(), steps)
    if ops:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
            for _ in range(steps):
                step()
            torch.cuda.synchronize()
        row["ops"] = op_breakdown(prof.key_averages(group_by_input_shape=True), steps, ops)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["gka_tiny_patch16_224", "deit_tiny_patch16_224"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", nargs="*", default=None, metavar="MODE",
                   help="also profile torch.compile'd models (modes: default, reduce-overhead, max-autotune...)")
    p.add_argument("--no-eager", action="store_true")
    p.add_argument("--host", action="store_true", help="also profile the host side (phases, top self-time events)")
    p.add_argument("--ops", type=int, default=0, metavar="N",
                   help="also list the N host ops (with input shapes) whose kernels take the most GPU time")
    p.add_argument("--model-kwargs", type=json.loads, default={}, help='JSON {model: {kwarg: value}}')
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_step.py: needs a CUDA device")
    device, dtype = torch.device("cuda"), torch.bfloat16
    modes = ([] if args.no_eager else [None]) + ([m or "default" for m in args.compile] if args.compile is not None
                                                  else [])
    if args.compile == []:
        modes.append("default")
    rows = []
    print(json.dumps(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                          date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), command=" ".join(sys.argv))))
    for mode in modes:
        for name in args.models:
            try:
                r = profile_model(name, args.batch, args.res, args.steps, args.warmup, mode, device, dtype,
                                  args.model_kwargs.get(name, {}), host=args.host, ops=args.ops)
            except Exception as e:  # noqa: BLE001  (a model that fails is a row with its error)
                r = dict(model=name, compile=mode or "eager", error=f"{type(e).__name__}: {str(e)[:300]}")
            rows.append(r)
            print(json.dumps(r), flush=True)
            torch.cuda.empty_cache()
    print("\n| model | mode | img/s | wall ms/step | GPU ms/step | scan kernels ms | other kernels ms | launches/step "
          "| GPU busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['compile']} | error: {r['error'][:80]} |||||||")
            continue
        print(f"| {r['model']} | {r['compile']} | {r['img_s']:.0f} | {r['wall_ms']:.1f} | {r['gpu_ms']:.1f} "
              f"| {r['scan_ms']:.1f} | {r['other_ms']:.1f} | {r['launches']:.0f} | {100 * r['gpu_busy']:.0f} % |")
    for r in rows:
        if r.get("blocking_calls"):
            calls = ", ".join(f"{k} {v:g}" for k, v in sorted(r["blocking_calls"].items()))
            print(f"\nblocking calls per step, {r['model']} ({r['compile']}; with the profile's own two "
                  f"synchronisations): {calls}")
    for r in rows:
        if "host_phase_ms" in r:
            phases = ", ".join(f"{k} {v:.1f}" for k, v in r["host_phase_ms"].items())
            print(f"\nhost, {r['model']} ({r['compile']}): phases ms {phases}; top self time (ms, calls per step):")
            for ms, n, name in r["host_top_self"]:
                print(f"  {ms:8.3f} {n:7.1f}  {name}")
    for r in rows:
        if "ops" in r:
            print(f"\nops with the most GPU time, {r['model']} ({r['compile']}; ms, calls per step, input shapes):")
            for ms, n, name, shapes in r["ops"]:
                print(f"  {ms:8.3f} {n:7.1f}  {name}  {shapes}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()

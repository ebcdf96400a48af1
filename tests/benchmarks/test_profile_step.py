"""benchmarks/profile_step.py: the split of a profile into scan kernels and the rest (the GPU run itself needs CUDA)."""
from types import SimpleNamespace

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py


def test_split_kernel_times_counts_scan_kernels_per_step():
    ps = load_benchmark("profile_step")
    ev = lambda key, us, n: SimpleNamespace(key=key, device_time_total=us, count=n)  # noqa: E731
    events = [ev("_fwd_solve_kernel", 4000.0, 24), ev("_bwd_solve_kernel", 8000.0, 24),
              ev("void at::native::vectorized_elementwise_kernel<4>", 2000.0, 400),
              ev("cudaLaunchKernel", 0.0, 500), ev("void selective_scan_fwd_kernel<...>", 1000.0, 2),
              ev("ampere_bf16_s16816gemm", 3000.0, 50)]
    total, scan, other, launches, others, scans = ps.split_kernel_times(events, steps=2)
    assert (total, scan, other) == (9.0, 6.5, 2.5)
    assert launches == (24 + 24 + 400 + 2 + 50) / 2      # host launch events have no device time
    assert [n for _, n in others] == ["ampere_bf16_s16816gemm", "void at::native::vectorized_elementwise_kernel<4>"]
    # the scan kernels per step, largest first: which implementation ran and the split between its kernels
    assert scans == [(4.0, "_bwd_solve_kernel"), (2.0, "_fwd_solve_kernel"), (0.5, "void selective_scan_fwd_kernel<...>")]
    assert ps.is_scan_kernel("_sum_directions_kernel") and not ps.is_scan_kernel("triton_poi_fused_add_0")


def test_host_breakdown_reads_phases_and_self_time_from_a_cpu_profile():
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function
    ps = load_benchmark("profile_step")
    a = torch.randn(256, 256)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            with record_function("phase:forward"):
                b = a @ a
            with record_function("phase:backward"):
                for _ in range(3):
                    b = b.relu()
    phases, top = ps.host_breakdown(prof.key_averages(), steps=2)
    assert set(phases) == {"forward", "backward"} and all(ms > 0 for ms in phases.values())
    calls = {name: n for _, n, name in top}
    assert calls["aten::relu"] == 3.0 and "aten::mm" in calls            # per step, by name
    assert not any(name.startswith("phase:") for name in calls)           # phases are not ops
    assert [ms for ms, _, _ in top] == sorted((ms for ms, _, _ in top), reverse=True)


def test_train_step_marks_a_cuda_graph_iteration_in_graph_modes(monkeypatch):
    """In the modes that record CUDA graphs each profiled step starts a new graph iteration before its forward
    (as train.py's loop does), so that the replays may reuse the last step's memory; otherwise it never does."""
    import torch
    ps = load_benchmark("profile_step")
    assert ps.CUDAGRAPH_MODES == ("reduce-overhead", "max-autotune")
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    model.num_classes = 5
    for cudagraphs, expected in ((False, 0), (True, 3)):
        marks.clear()
        step = ps.train_step_fn(model, 2, 4, torch.device("cpu"), torch.bfloat16, cudagraphs=cudagraphs)
        for _ in range(3):
            assert torch.isfinite(step())
        assert len(marks) == expected


def test_cuda_graph_modes_warm_up_through_the_recording():
    """In the CUDA-graph modes the warm-up runs at least the eager call and the recording (two steps), so that no
    timed or profiled step is a recording; other modes keep --warmup (at least one step, which compiles)."""
    ps = load_benchmark("profile_step")
    assert [ps.warmup_steps(w, "reduce-overhead") for w in (0, 1, 2, 3)] == [2, 2, 2, 3]
    assert ps.warmup_steps(1, "max-autotune") == 2
    assert [ps.warmup_steps(w, m) for w, m in ((1, "default"), (0, None), (3, "max-autotune-no-cudagraphs"))] == [1, 1, 3]


def test_blocking_calls_counts_the_calls_that_make_the_host_wait():
    ps = load_benchmark("profile_step")
    ev = lambda key, n: SimpleNamespace(key=key, count=n, device_time_total=0.0)  # noqa: E731
    events = [ev("cudaLaunchKernel", 900), ev("cudaStreamSynchronize", 6), ev("cudaDeviceSynchronize", 1),
              ev("cudaMemcpyAsync", 4), ev("cudaFree", 2), ev("aten::mm", 50)]
    assert ps.blocking_calls(events, steps=2) == {"cudaStreamSynchronize": 3.0, "cudaDeviceSynchronize": 0.5,
                                                 "cudaFree": 1.0}
    assert ps.blocking_calls([ev("cudaLaunchKernel", 10)], steps=1) == {}


def test_op_breakdown_names_the_host_ops_that_launched_the_gpu_time():
    import torch
    ps = load_benchmark("profile_step")
    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    ev = lambda key, us, n, dev, shapes: SimpleNamespace(key=key, self_device_time_total=us, count=n,  # noqa: E731
                                                         device_type=dev, input_shapes=shapes)
    events = [ev("aten::native_layer_norm", 6000.0, 48, cpu, [[16, 16384, 192], [192], [192]]),
              ev("aten::copy_", 9000.0, 96, cpu, [[16, 16384, 192], [16, 16384, 192]]),
              ev("aten::copy_", 1000.0, 24, cpu, [[16, 3], [16, 3]]),
              ev("aten::view", 0.0, 500, cpu, [[2, 3]]),                          # launched nothing
              ev("vectorized_layer_norm_kernel", 6000.0, 48, cuda, []),           # the kernel itself
              ev("aten::add_", 500.0, 10, cpu, [[1] * 200])]
    top = ps.op_breakdown(events, steps=2, top=3)
    assert [(ms, n, name) for ms, n, name, _ in top] == [(4.5, 48.0, "aten::copy_"), (3.0, 24.0, "aten::native_layer_norm"),
                                                        (0.5, 12.0, "aten::copy_")]
    assert top[0][3] == "[[16, 16384, 192], [16, 16384, 192]]"                   # grouped by input shapes
    long = ps.op_breakdown(events, steps=1, top=10)[-1][3]
    assert len(long) == 120 and long.endswith("...")

"""benchmarks/build_mamba_selective_scan.py: the source list, the flags and the call of cpp_extension.load, on a
stand-in checkout (the build itself needs nvcc and a GPU machine: scripts/gpu_anchors_env.sh runs it there)."""
import pytest

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py


def _checkout(tmp_path):
    folder = tmp_path / "mamba" / "csrc" / "selective_scan"
    folder.mkdir(parents=True)
    for name in ("selective_scan.cpp", "selective_scan_fwd_fp32.cu", "selective_scan_bwd_bf16_real.cu",
                 "selective_scan.h", "selective_scan_fwd_kernel.cuh", "static_switch.h"):
        (folder / name).write_text("")
    return tmp_path / "mamba", folder


def test_sources_are_the_binding_and_every_instantiation(tmp_path):
    tool = load_benchmark("build_mamba_selective_scan")
    checkout, folder = _checkout(tmp_path)
    assert [p.name for p in tool.selective_scan_sources(checkout)] == [
        "selective_scan.cpp", "selective_scan_bwd_bf16_real.cu", "selective_scan_fwd_fp32.cu"]


def test_flags_enable_half_and_bf16_operators():
    flags = load_benchmark("build_mamba_selective_scan").nvcc_flags(3)
    for kind in ("HALF", "BFLOAT16", "BFLOAT162"):
        assert f"-U__CUDA_NO_{kind}_OPERATORS__" in flags and f"-U__CUDA_NO_{kind}_CONVERSIONS__" in flags
    assert flags[-2:] == ["--threads", "3"] and "--expt-extended-lambda" in flags


def test_missing_sources_exit_2_naming_the_folder(tmp_path, capsys):
    tool = load_benchmark("build_mamba_selective_scan")
    assert tool.main([str(tmp_path / "nowhere"), str(tmp_path / "build")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "state-spaces/mamba" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "build").exists()


def test_main_builds_the_module_into_the_build_dir(tmp_path, monkeypatch):
    import torch.utils.cpp_extension as cpp
    tool = load_benchmark("build_mamba_selective_scan")
    checkout, folder = _checkout(tmp_path)
    calls = []
    monkeypatch.setattr(cpp, "load", lambda **kw: calls.append(kw))
    monkeypatch.setenv("NVCC_THREADS", "5")
    assert tool.main([str(checkout), str(tmp_path / "build")]) == 0
    (kw,) = calls
    assert kw["name"] == "selective_scan_cuda" and kw["build_directory"] == str(tmp_path / "build")
    assert kw["sources"][0].endswith("selective_scan.cpp") and len(kw["sources"]) == 3
    assert kw["extra_include_paths"] == [str(folder)] and kw["extra_cuda_cflags"][-1] == "5"
    assert (tmp_path / "build").is_dir()

"""Build mamba_ssm's CUDA selective scan (csrc/selective_scan of state-spaces/mamba) as the extension module
`selective_scan_cuda`, without installing mamba_ssm: the measurement anchor of benchmarks/compare.py and
benchmarks/anchors.py (docs/benchmarks.md, "Model comparison").

    python benchmarks/build_mamba_selective_scan.py MAMBA_CHECKOUT BUILD_DIR

MAMBA_CHECKOUT holds csrc/selective_scan/ (selective_scan.cpp and its selective_scan_*.cu instantiations);
BUILD_DIR receives selective_scan_cuda*.so (torch.utils.cpp_extension.load). The target architectures come from
TORCH_CUDA_ARCH_LIST (scripts/gpu_anchors_env.sh sets 9.0, the H200), the parallel jobs from MAX_JOBS, nvcc's own
threads from NVCC_THREADS (default 2). Needs nvcc and a CUDA build of torch; about 2.5 minutes on 16 cores.
"""
import argparse
import os
import sys
from pathlib import Path

MODULE = "selective_scan_cuda"


def selective_scan_sources(checkout):
    """The extension's sources in `checkout`: the binding (selective_scan.cpp) first, then every
    selective_scan_*.cu (one forward per input dtype, one backward per dtype and real/complex weights)."""
    folder = Path(checkout) / "csrc" / "selective_scan"
    binding = folder / "selective_scan.cpp"
    kernels = sorted(folder.glob("selective_scan_*.cu"))
    if not binding.is_file() or not kernels:
        raise FileNotFoundError(f"{folder}: no selective_scan.cpp and selective_scan_*.cu (a checkout of "
                                "state-spaces/mamba is needed)")
    return [binding] + kernels


def nvcc_flags(threads):
    """nvcc flags: optimised, C++17, the half and bf16 operators that the kernels use (torch's extension builds
    switch them off by default), the lambdas and constexpr calls of CUB in device code."""
    flags = ["-O3", "-std=c++17", "--use_fast_math", "--expt-relaxed-constexpr", "--expt-extended-lambda", "-lineinfo"]
    for kind in ("HALF", "BFLOAT16", "BFLOAT162"):
        flags += [f"-U__CUDA_NO_{kind}_OPERATORS__", f"-U__CUDA_NO_{kind}_CONVERSIONS__"]
    return flags + ["--threads", str(threads)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", help="a checkout of state-spaces/mamba (holding csrc/selective_scan/)")
    ap.add_argument("build_dir", help="folder for the build and the selective_scan_cuda*.so")
    args = ap.parse_args(argv)
    try:
        sources = selective_scan_sources(args.checkout)
    except FileNotFoundError as e:
        print(f"build_mamba_selective_scan: {e}", file=sys.stderr)
        return 2
    from torch.utils.cpp_extension import load
    os.makedirs(args.build_dir, exist_ok=True)
    load(name=MODULE, sources=[str(s) for s in sources], build_directory=args.build_dir,
         extra_include_paths=[str(sources[0].parent)], extra_cflags=["-O3", "-std=c++17"],
         extra_cuda_cflags=nvcc_flags(os.environ.get("NVCC_THREADS", "2")), verbose=True)
    print(f"built {MODULE} in {args.build_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SASS of the solve kernels without addresses, one file per kernel and input dtype (offline sm_90 compile of
benchmarks/kernel_resources.py), to compare two checkouts instruction by instruction:
    python sass_dump.py CHECKOUT PREFIX [GKAKernelConfig spec]    -> PREFIX_<kernel>_<dtype>.sass"""
import re
import sys

sys.path.insert(0, sys.argv[1] + "/benchmarks")
import kernel_resources as kr  # noqa: E402

spec = sys.argv[3] if len(sys.argv) > 3 else ""
for dtype in ("bf16", "fp32"):
    for name, fn, cx, warps, sig in kr.kernel_specs(64, dtype, spec, 197):
        if "solve" not in name:
            continue
        sass = kr.sass_of(kr.compile_kernel(fn, sig, cx, warps, 90, None).asm["cubin"])
        lines = [re.sub(r"/\*[0-9a-f]{4,}\*/", "", ln).strip() for ln in sass.splitlines()
                 if re.search(r"/\*[0-9a-f]{4,}\*/", ln)]
        with open(f"{sys.argv[2]}_{name}_{dtype}.sass", "w") as f:
            f.write("\n".join(lines))

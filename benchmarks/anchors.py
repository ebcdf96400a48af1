"""Public implementations that the GPU benchmarks time in the same process as this project's kernels.

    anchors = load_anchors()      # {"authors": Anchor, "fla_gka": Anchor}; paths from the arguments or GKA_ANCHOR_*
    a = anchors["authors"]
    o = a.fn(q, k, v, alpha, g) if a.fn is not None else None   # a.info: what was loaded, or why not

Every GKA anchor is wrapped to this project's convention, one direction per call:

    fn(q, k, v, alpha, g, reverse=False, *, gk=None, ridge_ratio=0.02, num_iter=30, scale=None) -> o

q, k, v [B, T, H, D] (q, k L2-normalised and k, v scaled by beta by the caller), alpha [B, T, H], g and gk
[B, T, H] natural-log forget gates (<= 0) of the value state and of the key covariance, gk=None meaning gk=g,
scale=None meaning D ** -0.5; reverse=True scans from the last token to the first (flip, call, flip back).
That is `gka_vision.ops.gka_scan`'s contract, so `gka_scan_reference` checks every anchor; a bidirectional
layer is two calls. How each anchor's own arguments map onto it:

  authors  the paper authors' Triton kernels (awslabs/hybrid-model-factory, training/src/hmf/model/hybrid_zoo/
           layers/gated_kalmanet/ops/chebyshev): gka_chebyshev_gla(q, k, v, alpha, g, gk, gla_scale,
           ridge_strength, num_iter=30, chunk_size=64) -> (o, kk_final, kv_final). Same layout and gates;
           gk=None there means an undecayed key covariance, so gk is always passed; gla_scale has no default;
           ridge_strength is our ridge_ratio (lambda_t = ridge_strength * ||H_t||_F, no floor); alpha is
           applied inside (q + alpha (x - q)). Needs fla-core < 0.5.1 (tested with 0.4.1): from fla 0.5.1 on,
           chunk_fwd_h takes log2 gates and the authors' natural-log gates give wrong numbers without an error.
  fla_gka  flash-linear-attention's GKA port (fla/ops/gka on fla's main branch): chunk_gka(q, k, v, g, gk,
           alpha, scale, ridge_ratio, num_iter) -> (o, final_state). Same layout and gates (converted to log2
           inside); gk=None there means an undecayed key covariance; lambda_t = ridge_ratio * ||H_t||_F.
           Needs fla-core >= 0.5.1 (tested with 0.6.0, which has no fla/ops/gka: the folder from fla's main
           branch is grafted onto that install's fla.ops). Its backward refuses Triton < 3.7.1 on Hopper.

Both anchors normalise nothing and apply no beta: the caller's q, k, v go in as they are.

Two fla-core versions in one process: each is installed into its own folder (pip install --target, see
scripts/gpu_anchors_env.sh). The authors' package is imported with the 0.4.1 folder first on sys.path; then
every `fla` module leaves sys.modules and the port is imported from the 0.6.0 folder. The functions keep the
module objects they were defined in (neither version imports its own modules lazily on these paths), so both
keep working; `sys.modules["fla"]` is the 0.6.0 package afterwards (any `fla` imported before is dropped).

mamba_ssm's CUDA selective scan: `load_mamba_selective_scan(build_dir)` imports an already-built extension
module `selective_scan_cuda` (from build_dir, else the one mamba_ssm installs) and
`mamba_selective_scan_fn(module)` wraps it to `gka_vision.ops.selective_scan`'s convention.

Self-check on the GPU machine (loads everything, prints each anchor's error vs this project's references, fp32
and bf16, both directions; mamba's output and gradients vs gka_vision's selective_scan_reference):

    . scripts/gpu_anchors_env.sh && wait_mamba_build 300; python3 benchmarks/anchors.py [--shape B,T,H,D]

Environment (read here, in the benchmarks, never by the library):
  GKA_ANCHOR_AUTHORS_DIR  hybrid-model-factory checkout (or its ops/chebyshev folder)
  GKA_ANCHOR_FLA_DIR      flash-linear-attention checkout of the main branch (holding fla/ops/gka)
  GKA_ANCHOR_FLA041_SITE  folder with fla-core 0.4.1 installed (pip install --target)
  GKA_ANCHOR_FLA060_SITE  folder with fla-core 0.6.0 installed
  GKA_ANCHOR_MAMBA_BUILD  folder holding the built selective_scan_cuda extension
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import torch

ENV = {
    "authors_dir": "GKA_ANCHOR_AUTHORS_DIR",
    "fla_dir": "GKA_ANCHOR_FLA_DIR",
    "fla041_site": "GKA_ANCHOR_FLA041_SITE",
    "fla060_site": "GKA_ANCHOR_FLA060_SITE",
    "mamba_build": "GKA_ANCHOR_MAMBA_BUILD",
}
AUTHORS_SUBDIR = "training/src/hmf/model/hybrid_zoo/layers/gated_kalmanet/ops/chebyshev"
AUTHORS_MODULE = "gka_anchor_authors_chebyshev"  # the chebyshev package's name here (it imports relatively)
# fla-core 0.5.1 switched chunk_fwd_h (and the chunked simple_gla) from exp to exp2 gates
FLA_EXP2_GATES = (0, 5, 1)


class Anchor(NamedTuple):
    """fn in this project's convention, or None; info: what was loaded (versions, files), or why not."""
    fn: Optional[Callable]
    info: str


def _version_tuple(text):
    parts = []
    for p in str(text).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def _purge(package):
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


@contextmanager
def _fla_from(site):
    """Import `fla` afresh from the folder `site` (pip install --target), or from sys.path when site is None."""
    saved = list(sys.path)
    if site is not None:
        _purge("fla")
        sys.path.insert(0, str(site))
    try:
        yield importlib.import_module("fla")
    finally:
        sys.path[:] = saved


def _site_problem(site, var):
    if site is not None and not (Path(site) / "fla" / "__init__.py").is_file():
        return f"{var}={site} holds no fla package (install a fla-core wheel there with pip install --target)"
    return None


def _authors_package_dir(authors_dir):
    root = Path(authors_dir)
    for cand in (root / AUTHORS_SUBDIR, root):
        if (cand / "__init__.py").is_file() and (cand / "gka_chebyshev_solve.py").is_file():
            return cand
    return None


def _fla_ops_dir(fla_dir):
    """The folder to graft onto fla.ops.__path__: <checkout>/fla/ops (holding gka/), or the parent of a gka/ folder."""
    root = Path(fla_dir)
    for cand in (root / "fla" / "ops", root.parent if root.name == "gka" else None):
        if cand is not None and (cand / "gka" / "__init__.py").is_file():
            return cand
    return None


def _directional(core):
    """Wrap core(q, k, v, alpha, g, gk, scale, ridge_ratio, num_iter) -> o into this project's convention."""
    def fn(q, k, v, alpha, g, reverse=False, *, gk=None, ridge_ratio=0.02, num_iter=30, scale=None):
        gk = g if gk is None else gk
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        ins = (q, k, v, alpha, g, gk)
        if reverse:
            ins = tuple(t.flip(1) for t in ins)
        else:
            ins = tuple(t.contiguous() for t in ins)
        o = core(*ins, scale=scale, ridge_ratio=ridge_ratio, num_iter=num_iter)
        return o.flip(1) if reverse else o
    return fn


def load_authors(authors_dir=None, fla041_site=None) -> Anchor:
    """The paper authors' gka_chebyshev_gla on fla-core < 0.5.1; see the module docstring."""
    authors_dir = authors_dir or os.environ.get(ENV["authors_dir"])
    fla041_site = fla041_site or os.environ.get(ENV["fla041_site"])
    if not authors_dir:
        return Anchor(None, f"no authors' source (argument authors_dir or {ENV['authors_dir']})")
    pkg_dir = _authors_package_dir(authors_dir)
    if pkg_dir is None:
        return Anchor(None, f"{authors_dir} holds neither {AUTHORS_SUBDIR}/ nor the chebyshev package itself")
    problem = _site_problem(fla041_site, ENV["fla041_site"])
    if problem:
        return Anchor(None, problem)
    try:
        with _fla_from(fla041_site) as fla:
            version = getattr(fla, "__version__", "?")
            if _version_tuple(version) >= FLA_EXP2_GATES:
                return Anchor(None, f"the authors' kernels need fla-core < 0.5.1 (natural-log gates in chunk_fwd_h), "
                                    f"found fla {version} at {Path(fla.__file__).parent}; set {ENV['fla041_site']}")
            _purge(AUTHORS_MODULE)
            spec = importlib.util.spec_from_file_location(
                AUTHORS_MODULE, pkg_dir / "__init__.py", submodule_search_locations=[str(pkg_dir)])
            module = importlib.util.module_from_spec(spec)
            sys.modules[AUTHORS_MODULE] = module
            spec.loader.exec_module(module)
            gka_chebyshev_gla = module.gka_chebyshev_gla
    except Exception as exc:  # a missing dependency (einops, triton), a syntax error in a newer checkout, ...
        _purge(AUTHORS_MODULE)
        return Anchor(None, f"importing the authors' kernels failed: {type(exc).__name__}: {exc}")

    def core(q, k, v, alpha, g, gk, scale, ridge_ratio, num_iter):
        with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
            o, _, _ = gka_chebyshev_gla(q, k, v, alpha, g, gk, scale, ridge_strength=ridge_ratio,
                                        num_iter=num_iter, chunk_size=64)
        return o

    return Anchor(_directional(core), f"authors' gka_chebyshev_gla from {pkg_dir} on fla {version}")


def load_fla_gka(fla_dir=None, fla060_site=None) -> Anchor:
    """flash-linear-attention's chunk_gka on fla-core >= 0.5.1; see the module docstring."""
    fla_dir = fla_dir or os.environ.get(ENV["fla_dir"])
    fla060_site = fla060_site or os.environ.get(ENV["fla060_site"])
    ops_dir = None
    if fla_dir:
        ops_dir = _fla_ops_dir(fla_dir)
        if ops_dir is None:
            return Anchor(None, f"{fla_dir} holds no fla/ops/gka/ (a checkout of fla's main branch)")
    problem = _site_problem(fla060_site, ENV["fla060_site"])
    if problem:
        return Anchor(None, problem)
    if fla060_site is None and ops_dir is not None:
        fla060_site = ops_dir.parent.parent if (ops_dir.parent / "__init__.py").is_file() else None
    try:
        with _fla_from(fla060_site) as fla:
            version = getattr(fla, "__version__", "?")
            if _version_tuple(version) < FLA_EXP2_GATES:
                return Anchor(None, f"fla's GKA port needs fla-core >= 0.5.1 (log2 gates in chunk_fwd_h), found "
                                    f"fla {version} at {Path(fla.__file__).parent}; set {ENV['fla060_site']}")
            fla_ops = importlib.import_module("fla.ops")
            if ops_dir is not None and str(ops_dir) not in fla_ops.__path__:
                fla_ops.__path__.append(str(ops_dir))  # after the install's own folder: its modules win
            gka = importlib.import_module("fla.ops.gka")
            chunk_gka = gka.chunk_gka
    except ModuleNotFoundError as exc:
        if exc.name == "fla.ops.gka" or exc.name == "fla":
            return Anchor(None, f"fla's GKA port not found: {exc} (argument fla_dir or {ENV['fla_dir']}: "
                                "a checkout of fla's main branch)")
        return Anchor(None, f"importing fla's GKA port failed: {type(exc).__name__}: {exc}")
    except Exception as exc:
        return Anchor(None, f"importing fla's GKA port failed: {type(exc).__name__}: {exc}")

    def core(q, k, v, alpha, g, gk, scale, ridge_ratio, num_iter):
        o, _ = chunk_gka(q, k, v, g=g, gk=gk, alpha=alpha, scale=scale, ridge_ratio=ridge_ratio,
                         num_iter=num_iter)
        return o

    return Anchor(_directional(core), f"fla's chunk_gka from {Path(gka.__file__).parent} on fla {version}")


def load_anchors(authors_dir=None, fla_dir=None, fla041_site=None, fla060_site=None) -> dict:
    """{"authors": Anchor, "fla_gka": Anchor}, the authors' first (it needs the older fla, see the docstring)."""
    return {
        "authors": load_authors(authors_dir, fla041_site),
        "fla_gka": load_fla_gka(fla_dir, fla060_site),
    }


# ---------------------------------------------------------------------------------------------------------
# mamba_ssm's CUDA selective scan

MAMBA_MODULE = "selective_scan_cuda"


def load_mamba_selective_scan(build_dir=None):
    """(module, info): the extension `selective_scan_cuda` built into build_dir (argument or
    GKA_ANCHOR_MAMBA_BUILD), else the one an installed mamba_ssm provides; (None, reason) when neither imports."""
    build_dir = build_dir or os.environ.get(ENV["mamba_build"])
    if build_dir:
        found = sorted(Path(build_dir).glob(f"{MAMBA_MODULE}*.so"))
        if not found:
            return None, f"no {MAMBA_MODULE}*.so in {build_dir} (not built yet, or the build failed)"
        try:
            loader = importlib.machinery.ExtensionFileLoader(MAMBA_MODULE, str(found[0]))
            spec = importlib.util.spec_from_file_location(MAMBA_MODULE, found[0], loader=loader)
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
        except Exception as exc:  # built against another torch or Python
            return None, f"importing {found[0]} failed: {type(exc).__name__}: {exc}"
        return module, f"{MAMBA_MODULE} from {found[0]}"
    try:
        module = importlib.import_module(MAMBA_MODULE)
    except Exception as exc:
        return None, (f"no built {MAMBA_MODULE} (argument build_dir or {ENV['mamba_build']}) and none installed "
                      f"({type(exc).__name__}: {exc})")
    return module, f"{MAMBA_MODULE} installed at {module.__file__}"


class _MambaScanFunction(torch.autograd.Function):
    """mamba's fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> [out, x, (out_z)] and
    bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z)
    -> [du, ddelta, dA, dB, dC, dD, ddelta_bias, (dz)]; x holds the chunk-boundary states the backward needs."""

    @staticmethod
    def forward(ctx, module, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        out, x, *rest = module.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.module, ctx.delta_softplus = module, delta_softplus
        ctx.has_D, ctx.has_z, ctx.has_bias = D is not None, z is not None, delta_bias is not None
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out if z is not None else None)
        return rest[0] if z is not None else out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        grads = ctx.module.bwd(u, delta, A, B, C, D, z, delta_bias, dout.contiguous(), x, out, None,
                               ctx.delta_softplus, False)
        du, ddelta, dA, dB, dC, dD, ddelta_bias = grads[:7]
        dz = grads[7] if ctx.has_z else None
        return (None, du, ddelta, dA, dB, dC, dD if ctx.has_D else None, dz,
                ddelta_bias if ctx.has_bias else None, None)


def mamba_selective_scan_fn(module):
    """`module` (from load_mamba_selective_scan) as gka_vision.ops.selective_scan's convention:

        fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False) -> [B, D, L]

    u, delta, z [B, D, L]; A [D, N] fp32; B, C [B, N, L] or [B, G, N, L]; D, delta_bias [D]. mamba's kernel
    wants B, C 4-D with one group count in u's dtype (a single group is expanded to the other's count) and
    D, delta_bias in fp32, all with unit last stride; reverse flips time (mamba has no reverse flag).
    Output in u's dtype."""
    def fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False):
        B = B.unsqueeze(1) if B.dim() == 3 else B
        C = C.unsqueeze(1) if C.dim() == 3 else C
        if B.shape[1] != C.shape[1]:  # the kernel takes one group count for both
            if min(B.shape[1], C.shape[1]) != 1:
                raise ValueError(f"mamba's selective scan needs B and C in the same number of groups, got "
                                 f"{B.shape[1]} and {C.shape[1]}")
            groups = max(B.shape[1], C.shape[1])
            B, C = B.expand(-1, groups, -1, -1), C.expand(-1, groups, -1, -1)
        B, C = B.to(u.dtype), C.to(u.dtype)
        D = D.float().contiguous() if D is not None else None
        delta_bias = delta_bias.float().contiguous() if delta_bias is not None else None
        seq = [u, delta, B, C, z]
        if reverse:
            seq = [t.flip(-1) if t is not None else None for t in seq]
        u, delta, B, C, z = (t.contiguous() if t is not None else None for t in seq)
        out = _MambaScanFunction.apply(module, u, delta, A.float().contiguous(), B, C, D, z, delta_bias,
                                       bool(delta_softplus))
        return out.flip(-1) if reverse else out
    return fn


# ---------------------------------------------------------------------------------------------------------
# self-check: python benchmarks/anchors.py [--shape B,T,H,D] (on the GPU machine after scripts/gpu_anchors_env.sh)

def _rel(x, y):
    return ((x.double() - y.double()).norm() / y.double().norm().clamp_min(1e-30)).item()


def _check_gka(anchors, shape, device):
    import torch.nn.functional as F
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from gka_vision.ops.gka_reference import gka_scan_reference
    B, T, H, D = shape
    gen = torch.Generator(device=device).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=device, generator=gen)  # noqa: E731
    beta = torch.sigmoid(r(B, T, H, 1))
    q, k = F.normalize(r(B, T, H, D), dim=-1), F.normalize(r(B, T, H, D), dim=-1) * beta
    v, alpha = r(B, T, H, D) * beta, torch.sigmoid(r(B, T, H))
    g = -0.3 * torch.rand(B, T, H, device=device, generator=gen)
    for reverse in (False, True):
        ref = gka_scan_reference(q, k, v, alpha, g, reverse=reverse)
        for name, a in anchors.items():
            if a.fn is None:
                continue
            for dtype in (torch.float32, torch.bfloat16):
                ins = [t.to(dtype) for t in (q, k, v, alpha)]
                o = a.fn(*ins, g, reverse=reverse)
                print(f"{name:8s} {str(dtype):15s} reverse={reverse!s:5s} rel. error vs float64 exact solve "
                      f"{_rel(o, ref):.2e}", flush=True)


def _check_mamba(module, device):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from gka_vision.ops.selective_scan import selective_scan_reference
    fn = mamba_selective_scan_fn(module)
    gen = torch.Generator(device=device).manual_seed(0)
    b, d, n, L = 2, 64, 16, 300
    r = lambda *s: torch.randn(*s, device=device, generator=gen)  # noqa: E731
    u, delta, z = r(b, d, L), r(b, d, L), r(b, d, L)
    A = -torch.rand(d, n, device=device, generator=gen) * 4
    Bm, Cm, D, bias = r(b, 2, n, L), r(b, 2, n, L), r(d), r(d) * 0.1
    for reverse in (False, True):
        ins = [t.clone().requires_grad_() for t in (u, delta, A, Bm, Cm, D, z, bias)]
        ref = selective_scan_reference(*ins, delta_softplus=True, reverse=reverse)
        ins2 = [t.clone().detach().requires_grad_() for t in ins]
        out = fn(*ins2, delta_softplus=True, reverse=reverse)
        do = torch.randn_like(ref)
        gr = torch.autograd.grad(ref, ins, do)
        gm = torch.autograd.grad(out, ins2, do)
        errs = " ".join(f"d{n_}={_rel(x, y):.1e}" for n_, x, y in zip(["u", "delta", "A", "B", "C", "D", "z", "bias"],
                                                                       gm, gr))
        print(f"mamba    fp32 reverse={reverse!s:5s} out {_rel(out, ref):.2e} {errs}", flush=True)


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description="Load the anchors from GKA_ANCHOR_* and check them against this "
                                            "project's references on one small case")
    p.add_argument("--shape", default="2,197,2,64", help="B,T,H,D of the GKA check (default 2,197,2,64)")
    args = p.parse_args(argv)
    try:
        shape = tuple(int(x) for x in args.shape.split(","))
        assert len(shape) == 4 and min(shape) > 0
    except (ValueError, AssertionError):
        print(f"anchors.py: --shape must be four positive integers B,T,H,D, got {args.shape!r}", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    anchors = load_anchors()
    module, info = load_mamba_selective_scan()
    for name, a in anchors.items():
        print(f"{name:8s} {'loaded' if a.fn else 'MISSING'}: {a.info}")
    print(f"mamba    {'loaded' if module else 'MISSING'}: {info}", flush=True)
    if device != "cuda":
        print("no CUDA device: loading checked only")
        return 0
    _check_gka(anchors, shape, device)
    if module is not None:
        _check_mamba(module, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())

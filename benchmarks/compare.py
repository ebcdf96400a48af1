"""One harness for every model: GKA, the Mamba baselines, DeiT and MambaOut, timed the same way.

For each model it measures, on one device, in one run:
  - parameters, and GMACs at --flops-res (fvcore, batch 1, eval, on the measurement device with the
    PyTorch scan; the scan ops that fvcore cannot see inside are counted by their own formulas:
    gka_vision.ops.FVCORE_HANDLES, selective_scan's handle, and attention's scaled_dot_product_attention);
  - inference throughput (images/s, autocast --dtype, no grad) at each --batch-sizes;
  - training-step throughput (forward + backward + AdamW step, autocast --dtype) and its peak memory;
  - a resolution sweep (--resolutions) at --sweep-batch: inference and training throughput and peak memory.

NAME@VARIANT rows are NAME built with a variant's kwargs (VARIANT_KWARGS), combinable with '+'. NAME@compile is
torch.compile(model), NAME@cudagraphs torch.compile(model, mode='reduce-overhead') (the step replayed as CUDA graphs,
one graph iteration per step): every new input shape or mode recompiles (tens of seconds), so a compiled row runs only the
training point at the first batch size and --res (the targets') and, last of all, the inference point there;
never the other batch sizes, and the sweep only with --compiled-sweep (its training points, each resolution
compiled afresh with static shapes, after torch.compiler.reset()). Every point records its first step's time
(first_step_s: the compilation for a compiled row, the Triton kernels' for the others).

Bounded and robust, for a single GPU run under a wall-clock limit:
  - points run in priority order: first the issue's targets (the eager rows of THROUGHPUT_TARGETS: training
    img/s at the first batch size and --res, and at the largest resolution at --sweep-batch; the training peak
    memory at --memory-res of MEMORY_TARGETS; then the compiled rows of THROUGHPUT_TARGETS, which take tens of
    seconds each to compile), then GMACs, then every other point; once --time-budget-s has passed, the
    remaining points are recorded as "skipped (time budget)" without running;
  - each point has --warmup untimed steps (the first compiles) and then at most --iters timed steps, fewer
    once --point-time-s of timed steps have run;
  - a first step (compilation) longer than --first-step-limit-s is stopped (SIGALRM) and recorded as
    "timeout"; any failure of a point (OOM, a Triton compile error, anything) is recorded with its message and
    the run goes on; if a project model fails with a Triton scan, it falls back to the PyTorch scan (recorded);
  - the Mamba baselines run with mamba_ssm's CUDA selective scan when gka_vision.ops.selective_scan has it
    (the compiled extension selective_scan_cuda importable); otherwise they get their best available scan:
    on CUDA their first eager training point is also timed with the other scans, and the fastest is kept for
    that model (all recorded; --scan-trials on also runs these trials next to mamba_ssm's scan);
  - <out>/<prefix>.json and .md are rewritten after every point, so a kill leaves the data measured so far;
    --render re-writes the .md and the plots from the .json.
It writes <out>/<prefix>.json, <prefix>.md (target ratios, tables, command, hardware, versions, date) and
PNG plots of throughput and memory against resolution.

Examples:
    python benchmarks/compare.py --time-budget-s 300    # the full comparison on a GPU, results in output/compare
    python benchmarks/compare.py --smoke --out /tmp/x   # a minute on CPU: two models, tiny sizes
    python benchmarks/compare.py --render --out DIR     # tables and plots again from DIR/compare.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
import contextlib
import functools
import importlib.util
import signal
import threading
import types
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

import timm

import gka_vision  # noqa: F401  (registers the project's models)

DEFAULT_MODELS = [
    'gka_tiny_patch16_224', 'gka_tiny_patch16_224@compile', 'deit_tiny_patch16_224', 'deit_tiny_patch16_224@compile',
    'gkavision_tiny', 'gkavision_tiny@compile', 'mambavision_tiny', 'mambavision_tiny@compile',
    'gka_small_patch16_224', 'mamba_vim_small_patch16_224', 'deit_small_patch16_224',
    'mambaout_femto', 'mamba_vim_tiny_patch16_224', 'mambaout_tiny',
]
SMOKE_MODELS = ['mamba_vim_tiny_patch16_224', 'mambavision_tiny']
SMOKE_KWARGS = {  # shallow versions, so that the CPU smoke run takes seconds
    'mamba_vim_tiny_patch16_224': dict(depth=2),
    'mambavision_tiny': dict(depths=(1, 1, 2, 2)),
}
PROJECT_MODULES = ('gka_vit', 'mamba_vim', 'mambavision', 'gkavision')
DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}
# the issue's throughput targets, most important first, measured in the same run: (model, baseline, required
# ratio of training images/s, point: 'bs' = the first batch size at --res, 'top' = the largest resolution at
# --sweep-batch)
THROUGHPUT_TARGETS = [('gkavision_tiny', 'mambavision_tiny', 1.0, 'bs'),
                      ('gkavision_tiny@compile', 'mambavision_tiny@compile', 1.0, 'bs'),
                      ('gka_tiny_patch16_224@compile', 'deit_tiny_patch16_224@compile', 0.5, 'bs'),
                      ('gkavision_tiny@cudagraphs', 'mambavision_tiny@cudagraphs', 1.0, 'bs'),
                      ('gka_tiny_patch16_224@cudagraphs', 'deit_tiny_patch16_224@cudagraphs', 0.5, 'bs'),
                      ('gka_small_patch16_224', 'mamba_vim_small_patch16_224', 1.0, 'bs'),
                      ('gka_tiny_patch16_224', 'deit_tiny_patch16_224', 1.0, 'top'),
                      ('gka_tiny_patch16_224@compile', 'deit_tiny_patch16_224@compile', 1.0, 'top')]  # --compiled-sweep
# (model, reference): training peak memory at --memory-res and --sweep-batch at most the reference's; the rows
# NAME@VARIANT of the model present are held to the same reference, compiled ones (with --compiled-sweep) to the
# reference compiled the same way
MEMORY_TARGETS = [('gka_tiny_patch16_224', 'deit_tiny_patch16_224'),
                  ('gka_small_patch16_224', 'deit_small_patch16_224')]
# NAME@VARIANT: NAME built with these extra kwargs, a row of its own (e.g. gka_tiny_patch16_224@recompute)
VARIANT_KWARGS = {'recompute': dict(recompute_mixer=True),
                  'noselective': dict(selective_recompute=False),  # keep every activation at any resolution
                  'gka_bi': dict(mixer='gka_bi'),  # MambaVision family: BidirectionalGKAMixer
                  'hd40': dict(gka_head_dim=40),  # gkavision_tiny: scan head dim C / num_heads (40) instead of 32
                  'unfused': dict(fuse_pointwise=False),  # GKA mixers: the per-token work as PyTorch ops in eager
                  'torchnorm': dict(fuse_norm=False),  # the blocks' LayerNorms as PyTorch's op (then the rounding)
                  'compile': {},  # torch.compile(model) (default mode); combine with '+': NAME@hd40+compile
                  'cudagraphs': {}}  # torch.compile(model, mode='reduce-overhead'): the step replayed as CUDA graphs
COMPILE_VARIANTS = ('compile', 'cudagraphs')
SKIPPED = 'skipped (time budget)'
TIMEOUT = 'timeout'  # the first step (a compilation) ran past --first-step-limit-s
PENDING = 'pending'  # planned, not reached yet (what a killed run leaves in the json)


# ------------------------------------------------------------------------------------------- models

@functools.lru_cache(maxsize=None)
def _project_models() -> frozenset:
    return frozenset(n for m in PROJECT_MODULES for n in timm.list_models(module=m))


def timm_name(name: str) -> str:
    """The timm model of a row name: 'gka_tiny_patch16_224@recompute' -> 'gka_tiny_patch16_224'."""
    return name.split('@', 1)[0]


def variants(name: str) -> List[str]:
    """The variants of a NAME@V1+V2 row name; an unknown one is an error naming it."""
    if '@' not in name:
        return []
    out = name.split('@', 1)[1].split('+')
    for variant in out:
        if variant not in VARIANT_KWARGS:
            raise ValueError(f'unknown model variant {variant!r} in {name!r} (known: {sorted(VARIANT_KWARGS)})')
    return out


def compiled(name: str) -> bool:
    """A NAME@...compile or NAME@...cudagraphs row (torch.compile(model)); never raises, unlike variants()."""
    return any(v in COMPILE_VARIANTS for v in name.partition('@')[2].split('+'))


def cudagraphs(name: str) -> bool:
    """A NAME@...cudagraphs row: compiled with mode='reduce-overhead', each step a new CUDA-graph iteration."""
    return 'cudagraphs' in name.partition('@')[2].split('+')


def eager_name(name: str) -> str:
    """The row of the same model without torch.compile: 'gkavision_tiny@hd40+compile' -> 'gkavision_tiny@hd40'."""
    base, _, rest = name.partition('@')
    kept = [v for v in rest.split('+') if v and v not in COMPILE_VARIANTS]
    return base + ('@' + '+'.join(kept) if kept else '')


def variant_kwargs(name: str) -> Dict[str, Any]:
    """Extra create_model kwargs of a NAME@VARIANT row (VARIANT_KWARGS); a bad variant is an error naming it."""
    kwargs: Dict[str, Any] = {}
    for variant in variants(name):
        kwargs.update(VARIANT_KWARGS[variant])
    return kwargs


def _known_model(name: str) -> bool:
    """A timm model, with a known variant if it names one."""
    try:
        variant_kwargs(name)
    except ValueError:
        return False
    return timm_name(name) in timm.list_models()


def build_model(name: str, res: int, backend: Optional[str], device: torch.device,
                extra: Optional[Dict[str, Any]] = None) -> torch.nn.Module:
    """Create `name` for inputs of res x res. Isotropic models get img_size=res (their position embedding
    is stored at that grid); the project's models get the scan backend; a NAME@VARIANT row its variant's
    kwargs; `extra` overrides sizes."""
    kwargs: Dict[str, Any] = {**variant_kwargs(name), **(extra or {})}
    base = timm_name(name)
    if backend and base in _project_models():
        kwargs['backend'] = backend
    try:
        model = timm.create_model(base, img_size=res, **kwargs)
    except TypeError:  # hierarchical / conv models take any size without img_size
        model = timm.create_model(base, **kwargs)
    model = model.to(device)
    if cudagraphs(name):
        return torch.compile(model, mode='reduce-overhead')
    return torch.compile(model) if compiled(name) else model


def scan_backends(device: torch.device) -> List[str]:
    """The selective-scan backends usable on `device`, from gka_vision.ops.selective_scan.available_backends;
    without that function, mamba_ssm's counts on CUDA when its extension selective_scan_cuda can be found."""
    try:
        from gka_vision.ops.selective_scan import available_backends
    except ImportError:
        names = ['reference', 'torch']
        if device.type == 'cuda':
            names.append('triton')
            if importlib.util.find_spec('selective_scan_cuda') is not None:
                names.append('mamba_ssm')
        return names
    return list(available_backends(device))


def scan_trials_wanted(setting: str, device: torch.device, scan: str) -> bool:
    """--scan-trials for a Mamba baseline running `scan`: 'on', 'off', or 'auto' (on CUDA, unless it already runs
    mamba_ssm's CUDA scan)."""
    return setting == 'on' or (setting == 'auto' and device.type == 'cuda' and not scan.endswith(':mamba_ssm'))


def scan_backend_used(name: str, device: torch.device, backend: Optional[str]) -> str:
    """Which scan implementation the model's mixers run with on this device ('-' for models without one)."""
    name = timm_name(name)
    if name not in _project_models():
        return '-'
    x = torch.zeros(1, 1, 1, device=device)
    if name.startswith('mamba'):
        from gka_vision.ops.selective_scan import resolve_backend
        return 'selective_scan:' + (backend if backend and backend != 'auto' else resolve_backend('auto', x, x, x))
    from gka_vision.ops.gka_scan import resolve_backend as gka_resolve
    return 'gka_scan:' + (backend if backend and backend != 'auto' else gka_resolve('auto', device))


# -------------------------------------------------------------------------------------------- flops

def count_gmacs(model: torch.nn.Module, res: int, in_chans: int = 3) -> Optional[float]:
    """fvcore MACs (one multiply-add = 1) at batch 1 on CPU, with the project's handles for the scan ops
    and attention (gka_vision.engine.flops)."""
    try:
        import fvcore  # noqa: F401
    except ImportError:
        return None
    from gka_vision.engine.flops import count_flops
    return count_flops(model, (in_chans, res, res), device=next(model.parameters()).device)["gflops"]


def set_scan_backend(model: torch.nn.Module, backend: str) -> None:
    """Switch every scan mixer of a project model to `backend` (same weights)."""
    for m in model.modules():
        if hasattr(m, 'backend') and isinstance(getattr(m, 'backend'), str):
            m.backend = backend


# ------------------------------------------------------------------------------------------- timing

def _sync(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or 'out of memory' in str(err).lower()


def _message(err: BaseException, limit: int = 600) -> str:
    """One line: exception type and message (middle cut out when long, e.g. Triton compile errors)."""
    text = ' '.join(f'{type(err).__name__}: {err}'.split())
    return text if len(text) <= limit else text[:limit // 2] + ' [...] ' + text[-limit // 2:]


def _reset_memory(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == 'cuda' else None


def cuda_healthy(device: torch.device) -> bool:
    """False when the CUDA context is unusable (e.g. after an illegal memory access in a kernel)."""
    if device.type != 'cuda':
        return True
    try:
        torch.cuda.synchronize(device)
        return torch.ones(1, device=device).add(1).item() == 2.0
    except Exception:  # noqa: BLE001
        return False


class FirstStepTimeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: Optional[float]):
    """Raise FirstStepTimeout after `seconds` of wall time, and again every second until the block ends (torch.compile
    suppresses some exceptions of its backward compilation). SIGALRM, so only in the main thread of a POSIX
    process; elsewhere, or with None, no limit. Interrupts Python code, e.g. torch.compile's, between calls."""
    if seconds is None or not hasattr(signal, 'SIGALRM') or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise FirstStepTimeout(f'first step (compilation) stopped after {seconds:g} s')

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01), 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _caused_by(err: BaseException, kind: type) -> bool:
    """`err` or an exception in its chain (torch.compile wraps what its backend raised) is a `kind`."""
    while err is not None:
        if isinstance(err, kind):
            return True
        err = err.__cause__ or err.__context__
    return False


def train_step(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype, graphs: bool = False):
    """One training step of `model` on the batch x, as a function returning the detached loss: random labels,
    AdamW (fused on CUDA), forward under autocast `dtype` (off for fp32), cross-entropy in fp32, backward, step.
    `graphs`: each step starts a new CUDA-graph iteration (a model compiled with mode='reduce-overhead')."""
    device = x.device
    model.train()
    num_classes = max(getattr(model, 'num_classes', 1000), 1)
    y = torch.randint(0, num_classes, (x.shape[0],), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == 'cuda')
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def measure(model: torch.nn.Module, batch: int, res: int, mode: str, dtype: torch.dtype, device: torch.device,
            warmup: int, iters: int, point_time_s: Optional[float] = None,
            deadline: Optional[float] = None, first_step_limit_s: Optional[float] = None,
            graphs: bool = False) -> Dict[str, Any]:
    """Images/s and peak memory of inference ('infer') or one training step ('train').

    `warmup` untimed steps (at least one: it compiles the Triton kernels, and the model under torch.compile;
    timed alone as first_step_s, stopped after `first_step_limit_s`; the others stop once
    they add up to `point_time_s` or `deadline` has passed; all timed together as warmup_s), then up to
    `iters` timed steps, stopping early once they add up to `point_time_s` (at least two) or `deadline`
    (time.monotonic(), at least one) has passed; the median step gives images/s. A non-finite output or loss
    is an error. Never raises: OOM gives status 'OOM', a stopped first step 'timeout', any other failure status
    'error' with its message. `graphs`: the model replays CUDA graphs (mode='reduce-overhead'); each step starts a
    new graph iteration, whose replay may reuse the memory of the last step's outputs (read before the next step).
    The first two calls of a graph-compiled model run it once eagerly and then record the graphs (several times a
    replay's time), so with `graphs` the warm-up has at least two steps, which neither `point_time_s` nor `deadline`
    cuts short: a timed step is always a replay."""
    in_chans = getattr(model, 'in_chans', 3)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    try:
        _reset_memory(device)
        x = torch.randn(batch, in_chans, res, res, device=device)
        if mode == 'infer':
            model.eval()

            def step():
                if graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                with torch.inference_mode(), autocast:
                    return model(x)
        else:
            step = train_step(model, x, dtype, graphs)
        t0 = time.perf_counter()
        with _time_limit(first_step_limit_s):
            out = step()  # compiles
            _sync(device)
        t1 = time.perf_counter()
        first_step_s = t1 - t0
        must = 2 if graphs else 1  # warm-up steps that always run (with graphs: the eager run and the recording)
        for i in range(1, max(warmup, must)):  # slow steps (or the deadline) cut the rest of the warm-up short
            if i >= must and ((point_time_s is not None and time.perf_counter() - t1 >= point_time_s)
                              or (deadline is not None and time.monotonic() > deadline)):
                break
            out = step()
            _sync(device)
        warmup_s = time.perf_counter() - t0
        if not bool(torch.isfinite(out.float()).all()):
            raise FloatingPointError(f'non-finite {"loss" if mode == "train" else "output"} after warm-up')
        del out
        times: List[float] = []
        while len(times) < max(iters, 1):
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
            if point_time_s is not None and len(times) >= 2 and sum(times) >= point_time_s:
                break
            if deadline is not None and time.monotonic() > deadline:
                break
        seconds = statistics.median(times)
        return dict(img_s=batch / seconds, ms=1e3 * seconds, peak_gb=_peak_gb(device), status='ok',
                    iters=len(times), warmup_s=round(warmup_s, 2), first_step_s=round(first_step_s, 2))
    except Exception as err:  # noqa: BLE001  (a failed point is a result, the run goes on)
        status = 'OOM' if _is_oom(err) else TIMEOUT if _caused_by(err, FirstStepTimeout) else 'error'
        return dict(img_s=None, ms=None, peak_gb=None, status=status, error=_message(err))
    finally:
        model.zero_grad(set_to_none=True)
        _reset_memory(device)


# --------------------------------------------------------------------------------------------- plan

Task = Tuple[str, str, int, str]  # (kind, model, batch size or resolution, mode)


def compiled_like(ref: str, name: str) -> str:
    """`ref` compiled as the row `name` is: ('deit_tiny_patch16_224', 'gka_tiny_patch16_224@hd40+cudagraphs') ->
    'deit_tiny_patch16_224@cudagraphs'; `ref` itself for an eager row."""
    kept = [v for v in name.partition('@')[2].split('+') if v in COMPILE_VARIANTS]
    return ref + ('@' + '+'.join(kept) if kept else '')


def memory_pairs(names, compiled_sweep: bool = False) -> List[Tuple[str, str]]:
    """MEMORY_TARGETS, then (row, reference) for every NAME@VARIANT row in `names` of their models; a compiled
    row (only with --compiled-sweep: otherwise it runs no sweep) is held to the reference compiled the same way."""
    return MEMORY_TARGETS + [(n, compiled_like(ref, n)) for m, ref in MEMORY_TARGETS for n in names
                             if timm_name(n) == m and n != m and (compiled_sweep or not compiled(n))]


def plan(args) -> List[Task]:
    """Every point of the run, most important first (see the module docstring). Kinds: 'bs' (a batch size at
    --res), 'sweep' (a resolution at --sweep-batch), 'gmacs'. A compiled row gets only its training point at
    the first batch size and, last of all, its inference point there; with --compiled-sweep also the training
    points of the sweep, after the eager ones."""
    models, b0, top = args.models, args.batch_sizes[0], max(args.resolutions)
    tasks: List[Task] = []

    def add(kind, m, a, mode):
        if m not in models or (kind, m, a, mode) in tasks:
            return
        if compiled(m) and ((kind == 'sweep' and (mode != 'train' or not args.compiled_sweep))
                            or (kind == 'bs' and a != b0)):  # each new shape recompiles
            return
        tasks.append((kind, m, a, mode))

    def add_throughput_targets(compiled_rows: bool):
        for m, ref, _, point in THROUGHPUT_TARGETS:
            for name in (m, ref):
                if compiled(name) == compiled_rows:
                    add(*(('bs', name, b0, 'train') if point == 'bs' else ('sweep', name, top, 'train')))

    pairs = memory_pairs(models, args.compiled_sweep)
    add_throughput_targets(False)  # seconds each
    for pair in pairs:
        for name in pair:
            if not compiled(name):
                add('sweep', name, args.memory_res, 'train')
    add_throughput_targets(True)  # tens of seconds each (compilation): after the eager targets
    for pair in pairs:
        for name in pair:
            if compiled(name):
                add('sweep', name, args.memory_res, 'train')
    if not args.no_flops:
        for m in models:
            add('gmacs', eager_name(m) if eager_name(m) in models else m, args.flops_res, '-')  # compiled: same
    for m in models:
        for mode in ('train',) if compiled(m) else ('train', 'infer'):
            for b in args.batch_sizes:
                add('bs', m, b, mode)
    for res in sorted(args.resolutions):
        for m in models:
            for mode in ('train', 'infer'):
                add('sweep', m, res, mode)
    for m in models:  # inference recompiles a compiled model: last
        add('bs', m, b0, 'infer')
    return tasks


# --------------------------------------------------------------------------------------------- runner

class Runner:
    """Runs the plan point by point within the time budget, recording every outcome, saving after each."""

    def __init__(self, args, device: torch.device, env: Dict[str, Any], prefix: str):
        self.args, self.device, self.env, self.prefix = args, device, env, prefix
        self.dtype = DTYPES[args.dtype]
        self.t_start = time.monotonic()
        self.deadline = None if args.time_budget_s is None else self.t_start + args.time_budget_s
        self.broken: Optional[str] = None  # set when the CUDA context died: nothing more can run
        self.backend: Dict[str, Optional[str]] = {}
        self.cache: Tuple[Optional[tuple], Any] = (None, None)
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.sweep: Dict[Tuple[str, int], Dict[str, Any]] = {}
        self.trialled: set = set()
        self.scans = scan_backends(device)
        self.tasks = plan(args)
        for kind, name, a, mode in self.tasks:  # every planned point exists in the json from the start
            row = self._row(name)
            if kind == 'bs':
                row[mode][str(a)] = dict(status=PENDING)
            elif kind == 'sweep':
                self.sweep.setdefault((name, a), dict(model=row['model'], name=name, res=a))[mode] = dict(
                    status=PENDING)

    # -- models
    def _row(self, name: str) -> Dict[str, Any]:
        if name not in self.rows:
            extra = self.args.model_kwargs.get(name)
            self.rows[name] = dict(model=name + (f' {json.dumps(extra)}' if extra else ''), name=name, scan='-',
                                   params_m=None, gmacs=None, infer={}, train={})
            project = timm_name(name) in _project_models()
            self.backend[name] = self.args.backend if project else None
            if project and name.startswith('mamba'):
                self.backend[name] = self.args.mamba_backend or (
                    'mamba_ssm' if 'mamba_ssm' in self.scans else self.args.backend)
            if project and not name.startswith('mamba') and self.args.gka_backend:
                self.backend[name] = self.args.gka_backend
        return self.rows[name]

    def _drop_model(self):
        self.cache = (None, None)
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()

    def model(self, name: str, res: int) -> torch.nn.Module:
        key = (name, res, self.backend[name])
        if self.cache[0] == key:
            if isinstance(self.cache[1], Exception):
                raise self.cache[1]
            return self.cache[1]
        self._drop_model()
        if compiled(name):  # a fresh, static-shape compilation for each (model, resolution), as a fixed-size run gets
            torch.compiler.reset()
        torch.manual_seed(0)
        try:
            model = build_model(name, res, self.backend[name], self.device, self.args.model_kwargs.get(name))
        except Exception as err:  # noqa: BLE001
            err = RuntimeError('model build failed: ' + _message(err))
            self.cache = (key, err)
            raise err
        row = self.rows[name]
        if row['params_m'] is None and res == self.args.res:  # position embeddings grow with the resolution
            row['params_m'] = sum(p.numel() for p in model.parameters()) / 1e6
        if row['scan'] == '-':
            row['scan'] = scan_backend_used(name, self.device, self.backend[name])
        self.cache = (key, model)
        return model

    # -- points
    def _over_budget(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def _measure(self, model, batch, res, mode, name=''):
        a = self.args
        return measure(model, batch, res, mode, self.dtype, self.device, a.warmup, a.iters, a.point_time_s,
                       self.deadline, a.first_step_limit_s, graphs=cudagraphs(name))

    def _fallback(self, name: str, result: Dict[str, Any]) -> bool:
        """After a non-OOM failure with a Triton scan: switch the model to the PyTorch scan. True if switched.
        Not for a compiled row: its point is the compiled scan op, and the PyTorch scan's graph compiles for minutes."""
        row = self.rows[name]
        if result['status'] != 'error' or self.backend[name] in (None, 'torch') or 'torch' in row['scan'] \
                or 'model build failed' in result.get('error', '') or compiled(name):
            return False
        row['scan_fallback'] = f'{row["scan"]} failed, PyTorch scan used from then on: {result["error"]}'
        row['scan'] = row['scan'].split(':')[0] + ':torch (fallback)'
        self.backend[name] = 'torch'
        self._drop_model()
        return True

    def _scan_trial(self, name: str, batch: int, res: int, result: Dict[str, Any]) -> Dict[str, Any]:
        """Best available scan of an eager Mamba baseline: also time its first training point with the other
        selective-scan backends of this device and keep the fastest for that model."""
        row = self.rows[name]
        if (name in self.trialled or not name.startswith('mamba') or timm_name(name) not in _project_models()
                or compiled(name) or not scan_trials_wanted(self.args.scan_trials, self.device, row['scan'])
                or 'torch' in row['scan'] or result['status'] != 'ok' or self._over_budget()):
            return result
        self.trialled.add(name)
        first = row['scan']
        family, current = first.split(':')
        model = self.model(name, res)
        trials = {first: result}
        for backend in ('mamba_ssm', 'triton', 'torch'):
            if backend in self.scans and backend != current and not self._over_budget():
                set_scan_backend(model, backend)
                trials[f'{family}:{backend}'] = self._measure(model, batch, res, 'train')
        row['scan_trials'] = trials
        best = max(trials, key=lambda k: trials[k]['img_s'] if trials[k]['status'] == 'ok' else -1.0)
        if best == first:
            set_scan_backend(model, self.backend[name] or 'auto')
            return result
        self.backend[name] = best.split(':')[1]
        row['scan'] = f'{best} (faster than {current})'
        self._drop_model()
        return trials[best]

    def run_task(self, task: Task) -> Dict[str, Any]:
        kind, name, a, mode = task
        if self.broken:
            return dict(status='skipped (CUDA context broken)', error=self.broken)
        if self._over_budget():
            return dict(status=SKIPPED)
        t0 = time.monotonic()
        if kind == 'gmacs':
            try:
                extra = self.args.model_kwargs.get(name)
                m = build_model(eager_name(name), a, 'torch' if timm_name(name) in _project_models() else None,
                                self.device, extra)
                gmacs = count_gmacs(m, a)
                for n, row in self.rows.items():  # the compiled rows of the model too
                    if eager_name(n) == eager_name(name):
                        row['gmacs'] = gmacs
                result = dict(status='ok' if gmacs is not None else 'no fvcore')
            except Exception as err:  # noqa: BLE001
                result = dict(status='error', error=_message(err))
            finally:
                m = None
                if self.device.type == 'cuda':
                    torch.cuda.empty_cache()
        else:
            batch, res = (a, self.args.res) if kind == 'bs' else (self.args.sweep_batch, a)
            for attempt in range(2):
                try:
                    model = self.model(name, res)
                except Exception as err:  # noqa: BLE001
                    result = dict(img_s=None, ms=None, peak_gb=None, status='error', error=str(err))
                    break
                result = self._measure(model, batch, res, mode, name)
                if result['status'] == 'error' and not cuda_healthy(self.device):
                    self.broken = f'{name} {kind} {a} {mode}: {result["error"]}'
                    break
                if attempt == 0 and self._fallback(name, result):
                    continue
                break
            if kind == 'bs' and mode == 'train' and result['status'] == 'ok':
                result = self._scan_trial(name, batch, res, result)
            result['scan'] = self.rows[name]['scan']
        result['seconds'] = round(time.monotonic() - t0, 2)
        return result

    def store(self, task: Task, result: Dict[str, Any]) -> None:
        kind, name, a, mode = task
        if kind == 'bs':
            self.rows[name][mode][str(a)] = result
        elif kind == 'sweep':
            self.sweep[(name, a)][mode] = result
        else:
            self.rows[name]['gmacs_status'] = result

    def run(self) -> Dict[str, Any]:
        self.save()
        for task in self.tasks:
            result = self.run_task(task)
            self.store(task, result)
            if result['status'] != SKIPPED:
                print(f'[compare] {time.monotonic() - self.t_start:6.1f}s {task[1]} {task[0]} {task[2]} {task[3]}: '
                      + (f'{result["img_s"]:.1f} img/s, peak {_fmt(result.get("peak_gb"), ".2f")} GB'
                         if result.get('img_s') else result['status'])
                      + (f' [{result.get("scan")}]' if result.get('scan', '-') != '-' else '')
                      + (f' ({result["error"]})' if result.get('error') else ''), flush=True)
                self.save()
        self._drop_model()
        self.env['finished'] = True
        return self.save()

    def result(self) -> Dict[str, Any]:
        counts: Dict[str, int] = {}
        for t in self.tasks:
            st = self._lookup(t).get('status', PENDING)
            counts[st] = counts.get(st, 0) + 1
        self.env['elapsed_s'] = round(time.monotonic() - self.t_start, 1)
        self.env['point_status_counts'] = counts
        order = {m: i for i, m in enumerate(self.args.models)}
        sweep = sorted(self.sweep.values(), key=lambda s: (order.get(s['name'], 1e9), s['res']))
        return dict(env=self.env, args=vars(self.args), rows=[self.rows[m] for m in self.args.models
                                                             if m in self.rows], sweep=sweep)

    def _lookup(self, task: Task) -> Dict[str, Any]:
        kind, name, a, mode = task
        if kind == 'bs':
            return self.rows[name][mode][str(a)]
        if kind == 'sweep':
            return self.sweep[(name, a)][mode]
        return self.rows[name].get('gmacs_status', dict(status=PENDING))

    def save(self) -> Dict[str, Any]:
        result = self.result()
        tmp = self.prefix + '.json.tmp'
        with open(tmp, 'w') as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, self.prefix + '.json')
        write_markdown(self.prefix + '.md', result)
        return result


# ------------------------------------------------------------------------------------------- report

def environment(device: torch.device, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = sys.argv[1:] if argv is None else list(argv)
    env = dict(
        date=_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        command=' '.join(['python', 'benchmarks/compare.py'] + args),
        python=platform.python_version(), torch=torch.__version__, timm=timm.__version__,
        gka_vision=getattr(gka_vision, '__version__', '?'), platform=platform.platform(),
        device=str(device), cpu=platform.processor() or platform.machine(), cpu_threads=torch.get_num_threads(),
        cuda_visible_devices=os.environ.get('CUDA_VISIBLE_DEVICES'), finished=False,
    )
    try:
        import triton
        env['triton'] = triton.__version__
    except ImportError:
        env['triton'] = None
    env['selective_scan_backends'] = scan_backends(device)
    extension = importlib.util.find_spec('selective_scan_cuda')
    env['selective_scan_cuda'] = extension.origin if extension else None
    if device.type == 'cuda':
        env['gpu'] = torch.cuda.get_device_name(device)
        env['cuda'] = torch.version.cuda
    return env


def _fmt(v, spec='.0f') -> str:
    if v is None:
        return '-'
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


_SHORT = {'OOM': 'OOM', 'error': 'error', TIMEOUT: 'timeout', SKIPPED: 'skip', PENDING: 'n/r',
          'skipped (CUDA context broken)': 'skip*'}


def _cell(r: Optional[Dict[str, Any]], key: str = 'img_s', spec: Optional[str] = None) -> str:
    if r is None:
        return '-'
    if r.get('status') != 'ok':
        return _SHORT.get(r.get('status'), str(r.get('status')))
    v = r.get(key)
    if spec is None and v is not None:
        spec = '.0f' if v >= 100 else '.3g'
    return _fmt(v, spec)


def _ok(r: Optional[Dict[str, Any]], key: str) -> Optional[float]:
    return r[key] if r and r.get('status') == 'ok' and r.get(key) is not None else None


def target_lines(result: Dict[str, Any]) -> List[str]:
    """The issue's targets as ratios of numbers from this run."""
    args = types.SimpleNamespace(**result['args'])
    rows = {r['name']: r for r in result['rows']}
    sweep = {(s['name'], s['res']): s for s in result['sweep']}
    b0, top = args.batch_sizes[0], max(args.resolutions)
    lines = ['## Targets (ratios of numbers measured in this run)', '',
             '| target | model | reference | ratio | required | verdict |', '|---|---|---|---|---|---|']

    def verdict(ratio, ok):
        return '-' if ratio is None else ('**met**' if ok else '**NOT met**')

    def scan(name):
        return rows.get(name, {}).get('scan', '-')

    for m, ref, need, point in THROUGHPUT_TARGETS:
        if point == 'bs':
            what = f'training img/s, batch {b0}, {args.res}px'
            a_, r_ = (rows.get(n, {}).get('train', {}).get(str(b0)) for n in (m, ref))
        else:
            what = f'training img/s, {top}px, batch {args.sweep_batch}'
            a_, r_ = (sweep.get((n, top), {}).get('train') for n in (m, ref))
        va, vr = _ok(a_, 'img_s'), _ok(r_, 'img_s')
        ratio = va / vr if va and vr else None
        lines.append(f'| {what} | {m}: {_cell(a_)} ({scan(m)}) | {ref}: {_cell(r_)} ({scan(ref)}) '
                     f'| {_fmt(ratio, ".3f")} | >= {need} | {verdict(ratio, ratio is not None and ratio >= need)} |')
    for m, ref in memory_pairs(rows, getattr(args, 'compiled_sweep', False)):
        a_, r_ = (sweep.get((n, args.memory_res), {}).get('train') for n in (m, ref))
        va, vr = _ok(a_, 'peak_gb'), _ok(r_, 'peak_gb')
        ratio = va / vr if va and vr else None
        lines.append(f'| training peak GB, {args.memory_res}px, batch {args.sweep_batch} '
                     f'| {m}: {_cell(a_, "peak_gb", ".2f")} | {ref}: {_cell(r_, "peak_gb", ".2f")} '
                     f'| {_fmt(ratio, ".3f")} | <= 1 | {verdict(ratio, ratio is not None and ratio <= 1)} |')
    lines += ['', "The Mamba baselines run with mamba_ssm's CUDA selective scan when it is available (the "
              'selective-scan backends above); otherwise with their best available scan: on CUDA the first eager '
              'training point is timed with each selective-scan backend and the fastest is kept (column "scan"; '
              'the timings under "Scan trials"). NAME@compile rows are torch.compile(model) (default mode), '
              "NAME@cudagraphs rows torch.compile(model, mode='reduce-overhead') (CUDA graphs); they run "
              f'only the training point at batch {b0}, {args.res}px and, last of all, the inference point there: '
              'each new input shape recompiles (tens of seconds), so no other batch size and '
              + ('of the sweep only its training points, each resolution compiled afresh (--compiled-sweep); '
                 if getattr(args, 'compiled_sweep', False) else 'no sweep; ')
              + 'compile times under "torch.compile". OOM means the point ran out of memory; "timeout": its first step '
              '(compilation) ran past --first-step-limit-s; "skip": not run, time budget spent; "n/r": not reached '
              '(run killed); "error": see Errors.', '']
    return lines


def compile_lines(result: Dict[str, Any]) -> List[str]:
    """The compiled rows next to their eager rows, with the first step's time (the compilation)."""
    args = types.SimpleNamespace(**result['args'])
    rows = {r['name']: r for r in result['rows']}
    b0 = str(args.batch_sizes[0])
    lines = []
    for name, r in rows.items():
        if not compiled(name):
            continue
        eager = rows.get(eager_name(name), {})
        for mode in ('train', 'infer'):
            c, e = r[mode].get(b0), eager.get(mode, {}).get(b0)
            if c is None:
                continue
            vc, ve = _ok(c, 'img_s'), _ok(e, 'img_s')
            ratio = vc / ve if vc and ve else None
            lines.append(f'| {r["model"]} | {mode} | {_cell(c)} | {_cell(e)} | {_fmt(ratio, ".2f")} '
                         f'| {_cell(c, "first_step_s", ".1f")} | {_cell(e, "first_step_s", ".1f")} |')
    if not lines:
        return []
    return ['', f'## torch.compile (batch {b0}, {args.res}px)', '',
            '| model | mode | img/s | eager row img/s | compiled / eager | first step s (compile) '
            '| eager first step s |', '|---|---|---|---|---|---|---|'] + lines


def write_markdown(path: str, result: Dict[str, Any]) -> None:
    env, rows, sweep = result['env'], result['rows'], result['sweep']
    args = types.SimpleNamespace(**result['args'])
    bs = args.batch_sizes
    counts = ', '.join(f'{k}: {v}' for k, v in env.get('point_status_counts', {}).items())
    lines = [
        f'# Model comparison ({env["date"]})', '',
        f'- command: `{env["command"]}`',
        f'- device: {env.get("gpu", env["cpu"])} ({env["device"]}, CUDA_VISIBLE_DEVICES='
        f'{env.get("cuda_visible_devices")}); torch {env["torch"]}, triton {env["triton"]}, '
        f'timm {env["timm"]}, CUDA {env.get("cuda", "-")}; selective-scan backends: '
        f'{", ".join(env["selective_scan_backends"])} (selective_scan_cuda: {env["selective_scan_cuda"]})',
        f'- precision: autocast {args.dtype}; timing: median of at most {args.iters} steps (fewer once they add up '
        f'to {args.point_time_s} s) after {args.warmup} warm-up steps (the first compiles the Triton kernels, '
        f'and the model of a @compile row); GMACs: fvcore at {args.flops_res}px, batch 1 (one multiply-add = 1, '
        f'so GFLOPs = 2 x GMACs)',
        f'- time budget: {args.time_budget_s} s; elapsed {env.get("elapsed_s")} s; '
        f'run {"finished" if env.get("finished") else "NOT finished (killed or still running)"}; points: {counts}',
        '',
    ] + target_lines(result) + [
        f'## Throughput and memory at {args.res}px', '',
        '| model | scan | params (M) | GMACs | ' + ' | '.join(f'infer img/s bs{b}' for b in bs) + ' | '
        + ' | '.join(f'train img/s bs{b}' for b in bs) + ' | ' + ' | '.join(f'train peak GB bs{b}' for b in bs) + ' |',
        '|' + '---|' * (4 + 3 * len(bs)),
    ]
    for r in rows:
        lines.append(
            f'| {r["model"]} | {r["scan"]} | {_fmt(r["params_m"], ".2f")} | {_fmt(r["gmacs"], ".2f")} | '
            + ' | '.join(_cell(r['infer'].get(str(b))) for b in bs) + ' | '
            + ' | '.join(_cell(r['train'].get(str(b))) for b in bs) + ' | '
            + ' | '.join(_cell(r['train'].get(str(b)), 'peak_gb', '.2f') for b in bs) + ' |')
    res = sorted({s['res'] for s in sweep})
    lines += ['', f'## Resolution sweep (batch {args.sweep_batch}): img/s / peak GB', '',
              '| model | ' + ' | '.join(f'{r}px infer' for r in res) + ' | '
              + ' | '.join(f'{r}px train' for r in res) + ' |',
              '|' + '---|' * (1 + 2 * len(res))]
    for m in dict.fromkeys(s['model'] for s in sweep):
        by_res = {s['res']: s for s in sweep if s['model'] == m}
        cells = []
        for mode in ('infer', 'train'):
            for r in res:
                s = by_res.get(r, {}).get(mode)
                cells.append('-' if s is None else
                             _cell(s) if s.get('status') != 'ok' else f'{_cell(s)} / {_cell(s, "peak_gb", ".2f")}')
        lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
    lines += compile_lines(result)
    trials = [(r['model'], k, v) for r in rows for k, v in r.get('scan_trials', {}).items()]
    if trials:
        lines += ['', f'## Scan trials (training, batch {bs[0]}, {args.res}px)', '',
                  '| model | scan | img/s | peak GB |', '|---|---|---|---|']
        lines += [f'| {m} | {k} | {_cell(v)} | {_cell(v, "peak_gb", ".2f")} |' for m, k, v in trials]
    errors = []
    for r in rows:
        if r.get('scan_fallback'):
            errors.append(f'- {r["model"]}: {r["scan_fallback"]}')
        if r.get('gmacs_status', {}).get('error'):
            errors.append(f'- {r["model"]} GMACs: {r["gmacs_status"]["error"]}')
        for mode in ('infer', 'train'):
            for b, v in r[mode].items():
                if v.get('error'):
                    errors.append(f'- {r["model"]} {mode} bs{b} {args.res}px ({v.get("status")}): {v["error"]}')
    for s in sweep:
        for mode in ('infer', 'train'):
            v = s.get(mode) or {}
            if v.get('error'):
                errors.append(f'- {s["model"]} {mode} bs{args.sweep_batch} {s["res"]}px ({v.get("status")}): '
                              f'{v["error"]}')
    if errors:
        lines += ['', '## Errors', ''] + errors
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def write_plots(prefix: str, sweep: List[Dict[str, Any]]) -> List[str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out = []
    for key, ylabel, suffix in (('img_s', 'images / s', 'throughput'), ('peak_gb', 'peak memory (GiB)', 'memory')):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, mode in zip(axes, ('infer', 'train')):
            for m in dict.fromkeys(s['model'] for s in sweep):
                pts = [(s['res'], _ok(s.get(mode), key)) for s in sweep if s['model'] == m]
                pts = [p for p in pts if p[1] is not None]
                if pts:
                    ax.plot(*zip(*pts), marker='o', label=m)
            ax.set_xlabel('resolution (px)')
            ax.set_ylabel(ylabel)
            ax.set_title(f'{"inference" if mode == "infer" else "training step"}: {ylabel}')
            if key == 'img_s':
                ax.set_yscale('log')
            ax.grid(alpha=.3)
            if not ax.lines:
                ax.text(0.5, 0.5, 'not measured on this device', ha='center', va='center', transform=ax.transAxes)
        if axes[0].lines or axes[1].lines:
            (axes[0] if axes[0].lines else axes[1]).legend(fontsize=7)
        fig.tight_layout()
        path = f'{prefix}_{suffix}_vs_resolution.png'
        fig.savefig(path, dpi=120)
        plt.close(fig)
        out.append(path)
    return out


# --------------------------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=None,
                   help='timm names (default: the comparison set); NAME@VARIANT adds NAME built with a variant\'s '
                        f'kwargs as a row of its own (variants: {VARIANT_KWARGS})')
    p.add_argument('--batch-sizes', nargs='+', type=int, default=[128, 256],
                   help='batch sizes at --res; the first is the one of the throughput targets')
    p.add_argument('--resolutions', nargs='+', type=int, default=[224, 384, 512, 768, 1024, 1536, 2048],
                   help='resolutions of the sweep at --sweep-batch; the largest is the one of a throughput target')
    p.add_argument('--sweep-batch', type=int, default=16)
    p.add_argument('--compiled-sweep', action='store_true',
                   help='compiled rows also run the training points of the sweep (each resolution compiles afresh, '
                        'tens of seconds to minutes), after the eager points')
    p.add_argument('--memory-res', type=int, default=1024,
                   help='resolution of the memory targets (a point of the sweep at --sweep-batch)')
    p.add_argument('--res', type=int, default=224, help='resolution of the batch-size measurements')
    p.add_argument('--flops-res', type=int, default=224)
    p.add_argument('--dtype', choices=sorted(DTYPES), default='bf16')
    p.add_argument('--backend', default='auto', help="scan backend of the project's models")
    p.add_argument('--mamba-backend', default=None, help='selective-scan backend of the Mamba baselines '
                   "(default: mamba_ssm when gka_vision.ops.selective_scan has it on the device, else --backend), "
                   'e.g. torch when the Triton selective scan failed its tests')
    p.add_argument('--gka-backend', default=None, help='GKA backend of the GKA models (default: --backend)')
    p.add_argument('--scan-trials', choices=['auto', 'on', 'off'], default='auto',
                   help="time the eager Mamba baselines' first training point with each selective-scan backend and "
                        "keep the fastest (auto: on CUDA, unless they run mamba_ssm's scan)")
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps per point (the first compiles; timed alone)')
    p.add_argument('--iters', type=int, default=20, help='at most this many timed steps per point')
    p.add_argument('--point-time-s', type=float, default=1.0,
                   help='stop timing a point once its timed steps add up to this (at least 2 steps)')
    p.add_argument('--first-step-limit-s', type=float, default=120,
                   help="stop a point whose first step (torch.compile's compilation, the Triton kernels') runs "
                        'longer; recorded as timeout, and the run goes on')
    p.add_argument('--time-budget-s', type=float, default=None,
                   help='wall-clock budget of the measurements; later points are recorded as skipped')
    p.add_argument('--no-flops', action='store_true')
    p.add_argument('--no-plots', action='store_true')
    p.add_argument('--model-kwargs', type=json.loads, default=None,
                   help='JSON {model name: {kwarg: value}} of size overrides (recorded in the report)')
    p.add_argument('--out', default='output/compare', help='output folder')
    p.add_argument('--prefix', default='compare', help='file name prefix inside --out')
    p.add_argument('--render', action='store_true', help='only re-write <prefix>.md and the plots from <prefix>.json')
    p.add_argument('--smoke', action='store_true',
                   help='CPU-sized run: two shallow models, fp32, batch 2, 64 px, resolutions 64 and 96, '
                        'one timed iteration')
    args = p.parse_args(argv)
    if args.smoke:
        args.models = args.models or SMOKE_MODELS
        args.batch_sizes, args.resolutions, args.sweep_batch, args.memory_res = [2], [64, 96], 2, 96
        if args.model_kwargs is None:
            args.model_kwargs = {m: SMOKE_KWARGS[m] for m in args.models if m in SMOKE_KWARGS}
        args.res = args.flops_res = 64
        args.warmup, args.iters, args.dtype = 1, 1, 'fp32'  # bf16 matmuls are slow on CPU
        if args.backend == 'auto':
            args.backend = 'torch'
    args.models = list(dict.fromkeys(args.models or DEFAULT_MODELS))
    args.model_kwargs = args.model_kwargs or {}
    return args


def render(prefix: str, plots: bool = True) -> Dict[str, Any]:
    with open(prefix + '.json') as f:
        result = json.load(f)
    write_markdown(prefix + '.md', result)
    result['plots'] = write_plots(prefix, result['sweep']) if plots else []
    return result


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    prefix = os.path.join(args.out, args.prefix)
    if args.render:
        result = render(prefix, not args.no_plots)
        print(f'[compare] wrote {prefix}.md, ' + ', '.join(result['plots']))
        return result
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    env = environment(device, argv)
    unknown = [m for m in args.models if not _known_model(m)]
    if unknown:
        print(f'[compare] unknown model name(s) {unknown}: recorded as errors', flush=True)
    runner = Runner(args, device, env, prefix)
    print(f'[compare] {len(runner.tasks)} points, time budget {args.time_budget_s} s, device {device} '
          f'{env.get("gpu", "")}', flush=True)
    result = runner.run()
    result['plots'] = [] if args.no_plots else write_plots(prefix, result['sweep'])
    print(f'[compare] wrote {prefix}.json, {prefix}.md, ' + ', '.join(result['plots'])
          + f'; points: {env["point_status_counts"]}, {env["elapsed_s"]} s', flush=True)
    return result


if __name__ == '__main__':
    main()

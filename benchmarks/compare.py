"""One harness for every model: GKA, the Mamba baselines, DeiT and MambaOut, timed the same way.

For each model it measures, on one device, in one run:
  - parameters, and GMACs at --flops-res (fvcore, batch 1, eval; the scan ops that fvcore cannot see
    inside are counted by their own formulas: gka_vision.ops.FVCORE_HANDLES, selective_scan's handle,
    and attention's scaled_dot_product_attention, which fvcore skips otherwise);
  - inference throughput (images/s, autocast --dtype, no grad) at each --batch-sizes;
  - training-step throughput (forward + backward + AdamW step, autocast --dtype) and its peak memory;
  - a resolution sweep (--resolutions) at --sweep-batch: inference and training throughput and peak memory.
It writes <out>/<prefix>.json, <prefix>.md (tables with command, hardware, versions, date) and PNG plots
of throughput and memory against resolution. Out-of-memory points are recorded as OOM, not skipped silently.

Examples:
    python benchmarks/compare.py                      # the full comparison on a GPU, results in docs/
    python benchmarks/compare.py --smoke --out /tmp/x  # a minute on CPU: two models, tiny sizes
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
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import timm

import gka_vision  # noqa: F401  (registers the project's models)

DEFAULT_MODELS = [
    'gka_tiny_patch16_224', 'gka_small_patch16_224',
    'mamba_vim_tiny_patch16_224', 'mamba_vim_small_patch16_224',
    'gkavision_tiny', 'mambavision_tiny',
    'deit_tiny_patch16_224', 'deit_small_patch16_224',
    'mambaout_femto', 'mambaout_tiny',
]
SMOKE_MODELS = ['mamba_vim_tiny_patch16_224', 'mambavision_tiny']
SMOKE_KWARGS = {  # shallow versions, so that the CPU smoke run takes seconds
    'mamba_vim_tiny_patch16_224': dict(depth=2),
    'mambavision_tiny': dict(depths=(1, 1, 2, 2)),
}
PROJECT_MODULES = ('gka_vit', 'mamba_vim', 'mambavision', 'gkavision')
DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}


# ------------------------------------------------------------------------------------------- models

def _project_models() -> set:
    return {n for m in PROJECT_MODULES for n in timm.list_models(module=m)}


def build_model(name: str, res: int, backend: Optional[str], device: torch.device,
                extra: Optional[Dict[str, Any]] = None) -> torch.nn.Module:
    """Create `name` for inputs of res x res. Isotropic models get img_size=res (their position embedding
    is stored at that grid); the project's models get the scan backend; `extra` overrides sizes."""
    kwargs: Dict[str, Any] = dict(extra or {})
    if backend and name in _project_models():
        kwargs['backend'] = backend
    try:
        model = timm.create_model(name, img_size=res, **kwargs)
    except TypeError:  # hierarchical / conv models take any size without img_size
        model = timm.create_model(name, **kwargs)
    return model.to(device)


def scan_backend_used(name: str, device: torch.device, backend: Optional[str]) -> str:
    """Which scan implementation the model's mixers run with on this device ('-' for models without one)."""
    if name not in _project_models():
        return '-'
    if backend and backend != 'auto':
        return backend
    x = torch.zeros(1, 1, 1, device=device)
    if name.startswith('mamba'):
        from gka_vision.ops.selective_scan import _resolve_backend
        return 'selective_scan:' + _resolve_backend('auto', x, x, x)
    from gka_vision.ops.gka_scan import _resolve_backend as gka_resolve
    return 'gka_scan:' + gka_resolve('auto', device)


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


# ------------------------------------------------------------------------------------------- timing

def _sync(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], None], warmup: int, iters: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or 'out of memory' in str(err).lower()


def _reset_memory(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == 'cuda' else None


def measure(model: torch.nn.Module, batch: int, res: int, mode: str, dtype: torch.dtype, device: torch.device,
            warmup: int, iters: int) -> Dict[str, Any]:
    """Images/s and peak memory of inference ('infer') or one training step ('train'); OOM is recorded."""
    in_chans = getattr(model, 'in_chans', 3)
    num_classes = max(getattr(model, 'num_classes', 1000), 1)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    try:
        _reset_memory(device)
        x = torch.randn(batch, in_chans, res, res, device=device)
        if mode == 'infer':
            model.eval()

            def step():
                with torch.inference_mode(), autocast:
                    model(x)
        else:
            model.train()
            y = torch.randint(0, num_classes, (batch,), device=device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == 'cuda')

            def step():
                opt.zero_grad(set_to_none=True)
                with autocast:
                    loss = F.cross_entropy(model(x).float(), y)
                loss.backward()
                opt.step()
        seconds = _median_seconds(step, warmup, iters, device)
        return dict(img_s=batch / seconds, ms=1e3 * seconds, peak_gb=_peak_gb(device), status='ok')
    except Exception as err:  # noqa: BLE001  (OOM is a result; anything else is re-raised)
        if not _is_oom(err):
            raise
        return dict(img_s=None, ms=None, peak_gb=None, status='OOM')
    finally:
        model.zero_grad(set_to_none=True)
        _reset_memory(device)


# ------------------------------------------------------------------------------------------- report

def environment(device: torch.device) -> Dict[str, Any]:
    env = dict(
        date=_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        command=' '.join([os.path.basename(sys.executable)] + sys.argv),
        python=platform.python_version(), torch=torch.__version__, timm=timm.__version__,
        gka_vision=getattr(gka_vision, '__version__', '?'), platform=platform.platform(),
        device=str(device), cpu=platform.processor() or platform.machine(), cpu_threads=torch.get_num_threads(),
    )
    try:
        import triton
        env['triton'] = triton.__version__
    except ImportError:
        env['triton'] = None
    from gka_vision.ops.selective_scan import _mamba_ssm_fn
    env['mamba_ssm'] = _mamba_ssm_fn() is not None
    if device.type == 'cuda':
        env['gpu'] = torch.cuda.get_device_name(device)
        env['cuda'] = torch.version.cuda
    return env


def _fmt(v, spec='.0f') -> str:
    if v is None:
        return '-'
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _cell(r: Dict[str, Any], key: str = 'img_s', spec: Optional[str] = None) -> str:
    if r['status'] == 'OOM':
        return 'OOM'
    v = r[key]
    if spec is None and v is not None:
        spec = '.0f' if v >= 100 else '.3g'
    return _fmt(v, spec)


def write_markdown(path: str, env: Dict[str, Any], rows: List[Dict[str, Any]], sweep: List[Dict[str, Any]],
                   args) -> None:
    bs = args.batch_sizes
    lines = [
        f'# Model comparison ({env["date"]})', '',
        f'- command: `{env["command"]}`',
        f'- device: {env.get("gpu", env["cpu"])} ({env["device"]}); torch {env["torch"]}, triton {env["triton"]}, '
        f'timm {env["timm"]}, CUDA {env.get("cuda", "-")}, mamba_ssm importable: {env["mamba_ssm"]}',
        f'- precision: autocast {args.dtype}; timing: median of {args.iters} iterations after {args.warmup} warm-up; '
        f'GMACs: fvcore at {args.flops_res}px, batch 1 (one multiply-add = 1)', '',
        '| model | scan | params (M) | GMACs | ' + ' | '.join(f'infer img/s bs{b}' for b in bs) + ' | '
        + ' | '.join(f'train img/s bs{b}' for b in bs) + ' | ' + ' | '.join(f'train peak GB bs{b}' for b in bs) + ' |',
        '|' + '---|' * (4 + 3 * len(bs)),
    ]
    for r in rows:
        lines.append(
            f'| {r["model"]} | {r["scan"]} | {_fmt(r["params_m"], ".2f")} | {_fmt(r["gmacs"], ".2f")} | '
            + ' | '.join(_cell(r['infer'][str(b)]) for b in bs) + ' | '
            + ' | '.join(_cell(r['train'][str(b)]) for b in bs) + ' | '
            + ' | '.join(_cell(r['train'][str(b)], 'peak_gb', '.2f') for b in bs) + ' |')
    res = args.resolutions
    lines += ['', f'## Resolution sweep (batch {args.sweep_batch})', '',
              '| model | ' + ' | '.join(f'{r}px infer img/s / peak GB' for r in res) + ' | '
              + ' | '.join(f'{r}px train img/s / peak GB' for r in res) + ' |',
              '|' + '---|' * (1 + 2 * len(res))]
    for m in dict.fromkeys(s['model'] for s in sweep):
        by_res = {s['res']: s for s in sweep if s['model'] == m}
        cells = []
        for mode in ('infer', 'train'):
            for r in res:
                s = by_res.get(r)
                cells.append('-' if s is None else f'{_cell(s[mode])} / {_cell(s[mode], "peak_gb", ".2f")}')
        lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
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
                pts = [(s['res'], s[mode][key]) for s in sweep if s['model'] == m and s[mode][key] is not None]
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
        if axes[0].lines:
            axes[0].legend(fontsize=7)
        fig.tight_layout()
        path = f'{prefix}_{suffix}_vs_resolution.png'
        fig.savefig(path, dpi=120)
        plt.close(fig)
        out.append(path)
    return out


# --------------------------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=None, help='timm names (default: the comparison set)')
    p.add_argument('--batch-sizes', nargs='+', type=int, default=[128, 256])
    p.add_argument('--resolutions', nargs='+', type=int, default=[224, 384, 512, 768, 1024])
    p.add_argument('--sweep-batch', type=int, default=16)
    p.add_argument('--res', type=int, default=224, help='resolution of the batch-size measurements')
    p.add_argument('--flops-res', type=int, default=224)
    p.add_argument('--dtype', choices=sorted(DTYPES), default='bf16')
    p.add_argument('--backend', default='auto', help="scan backend of the project's models")
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--no-flops', action='store_true')
    p.add_argument('--model-kwargs', type=json.loads, default=None,
                   help='JSON {model name: {kwarg: value}} of size overrides (recorded in the report)')
    p.add_argument('--out', default='docs', help='output folder')
    p.add_argument('--prefix', default='compare', help='file name prefix inside --out')
    p.add_argument('--smoke', action='store_true',
                   help='CPU-sized run: two shallow models, fp32, batch 2, 64 px, resolutions 64 and 96, '
                        'one timed iteration')
    args = p.parse_args(argv)
    if args.smoke:
        args.models = args.models or SMOKE_MODELS
        args.batch_sizes, args.resolutions, args.sweep_batch = [2], [64, 96], 2
        if args.model_kwargs is None:
            args.model_kwargs = {m: SMOKE_KWARGS[m] for m in args.models if m in SMOKE_KWARGS}
        args.res = args.flops_res = 64
        args.warmup, args.iters, args.dtype = 1, 1, 'fp32'  # bf16 matmuls are slow on CPU
        if args.backend == 'auto':
            args.backend = 'torch'
    args.models = args.models or DEFAULT_MODELS
    args.model_kwargs = args.model_kwargs or {}
    return args


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    os.makedirs(args.out, exist_ok=True)
    prefix = os.path.join(args.out, args.prefix)
    env = environment(device)
    unknown = [m for m in args.models if m not in timm.list_models()]
    if unknown:
        raise SystemExit(f'compare.py: unknown model name(s) {unknown}')

    rows, sweep = [], []
    for name in args.models:
        torch.manual_seed(0)
        extra = args.model_kwargs.get(name)
        model = build_model(name, args.res, args.backend, device, extra)
        row = dict(model=name + (f' {json.dumps(extra)}' if extra else ''),
                   scan=scan_backend_used(name, device, args.backend),
                   params_m=sum(p.numel() for p in model.parameters()) / 1e6, gmacs=None, infer={}, train={})
        if not args.no_flops:
            row['gmacs'] = count_gmacs(build_model(name, args.flops_res, 'torch' if name in _project_models()
                                                   else None, torch.device('cpu'), extra), args.flops_res)
        for b in args.batch_sizes:
            for mode in ('infer', 'train'):
                row[mode][str(b)] = measure(model, b, args.res, mode, dtype, device, args.warmup, args.iters)
        print(f'[compare] {name}: {row["params_m"]:.2f}M params, {_fmt(row["gmacs"], ".2f")} GMACs, '
              + ', '.join(f'bs{b} infer {_cell(row["infer"][str(b)])} / train {_cell(row["train"][str(b)])} img/s'
                          for b in args.batch_sizes), flush=True)
        rows.append(row)
        del model
        for res in args.resolutions:
            model = build_model(name, res, args.backend, device, extra)
            point = dict(model=row['model'], res=res)
            for mode in ('infer', 'train'):
                point[mode] = measure(model, args.sweep_batch, res, mode, dtype, device, args.warmup, args.iters)
            sweep.append(point)
            print(f'[compare]   {res}px: infer {_cell(point["infer"])} img/s {_cell(point["infer"], "peak_gb", ".2f")} GB,'
                  f' train {_cell(point["train"])} img/s {_cell(point["train"], "peak_gb", ".2f")} GB', flush=True)
            del model

    result = dict(env=env, args=vars(args), rows=rows, sweep=sweep)
    with open(prefix + '.json', 'w') as f:
        json.dump(result, f, indent=1)
    write_markdown(prefix + '.md', env, rows, sweep, args)
    result['plots'] = write_plots(prefix, sweep)
    print(f'[compare] wrote {prefix}.json, {prefix}.md, ' + ', '.join(result['plots']))
    return result


if __name__ == '__main__':
    main()

"""Count the activation memory of one training step of a timm model on the CPU (predicts the GPU peak).

    python benchmarks/activation_memory.py gka_tiny_patch16_224 deit_tiny_patch16_224 --img-size 1024 --batch 16
    python benchmarks/activation_memory.py gka_tiny_patch16_224 --img-size 1024 --batch 16 --breakdown blocks.0
    python benchmarks/activation_memory.py gka_tiny_patch16_224 --img-size 1024 --batch 16 --kwargs recompute_mixer=True

What is counted: every tensor saved for backward (torch.autograd.graph.saved_tensors_hooks) during one
training forward under autocast (bf16 by default), deduplicated by storage, attributed to the innermost
module running when it was saved; parameters themselves are excluded (they are counted with their grads and
the two AdamW moments as 16 bytes per parameter). Inputs kept by torch.utils.checkpoint (non-reentrant) are
counted too (the checkpoint keeps them alive instead of saving them).

So that the count matches the GPU code paths:
  - GKA models run the scan ops (gka_vision.ops.gka_scan) with backend 'triton' on a stand-in of the kernels'
    host functions (gka_triton_forward / gka_triton_backward) that returns what the kernels return: o, and
    x [NDIR, B, T, H, D] fp32 and fro [NDIR, B, T, H] fp32, which the op saves with its inputs q, k, v,
    alpha and the gates; its output is a cheap function of the inputs. The backward's transient buffers
    (chunk states, per-direction gradients) are estimated from the shapes of each scan call.
  - ops that CUDA autocast runs in fp32 but CPU autocast does not (layer_norm, rsqrt, pow, vector norms, ...)
    run in fp32 here too (CudaAutocastPolicy), so the saved copies have the GPU's dtypes.
  - scaled_dot_product_attention is replaced by a stand-in that saves what flash attention saves
    (q, k, v, output, fp32 logsumexp [B, H, T]) instead of the CPU math path's attention matrix.

Sizes are linear in the batch, so the forward runs at batch 1 and is scaled to --batch; the batch-independent
saved tensors (autocast's bf16 weight copies) are found per module from two cheap runs at batch 1 and 2 at a
small resolution and not scaled. The numbers are CPU counts, i.e. predictions of the GPU allocator's peak, not GPU measurements.
"""
import argparse
import ast
import contextlib
import json
import math
import os
import sys
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import timm  # noqa: E402
import gka_vision  # noqa: E402,F401  (registers the models)
gka_scan_mod = sys.modules['gka_vision.ops.gka_scan']  # the module (gka_vision.ops.gka_scan is also a function)
from gka_vision.layers import mixer_parts  # noqa: E402

GB = 2 ** 30  # GiB, as benchmarks/compare.py reports the GPU's max_memory_allocated


# ---------------------------------------------------------------------------------------------- stand-ins
class _StandInTritonModule:
    """Replaces gka_kernels under the scan ops: the kernels' host functions with their outputs' shapes and dtypes."""

    @staticmethod
    def gka_triton_forward(q, k, v, alpha, gates, dir_base=0, ridge_ratio=0.02, num_iter=30, scale=None,
                           config=None):
        B, T, H, D = q.shape
        ndir = gates.shape[0]
        x = torch.zeros(ndir, B, T, H, D, dtype=torch.float32, device=q.device)
        fro = torch.zeros(ndir, B, T, H, dtype=torch.float32, device=q.device)
        o = (q.float() * 0.5 + k.float() * 0.25 + v.float() * 0.25 + alpha.float().unsqueeze(-1)
             + gates.sum(0).unsqueeze(-1)).to(q.dtype)
        return o, x, fro

    @staticmethod
    def gka_triton_backward(q, k, v, alpha, gates, x, fro, do, dir_base=0, ridge_ratio=0.02, num_iter=30,
                            scale=None, sequential=False, config=None):
        do = do.float()
        return ((do * 0.5).to(q.dtype), (do * 0.25).to(k.dtype), (do * 0.25).to(v.dtype),
                do.sum(-1).to(alpha.dtype), do.sum(-1).expand_as(gates).contiguous())


def _recording(scan, bidirectional):
    """The mixers' scan function, recording each call's shapes for the backward's transient-memory model."""
    def run(q, *args, **kwargs):
        B, T, H, D = q.shape
        _record_scan_transient(B, T, H, D, 2 if bidirectional else 1,
                               bool(kwargs.get('sequential_backward', False)) and bidirectional)
        return scan(q, *args, **kwargs)
    return run


class _FlashSDPAStandIn(torch.autograd.Function):
    """Saves what flash attention saves: q, k, v, output and the fp32 logsumexp [B, H, T]."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = (q * 0.5 + v * 0.5) if q.shape == v.shape else torch.zeros(
            *q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        lse = torch.zeros(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse = ctx.saved_tensors
        return do * 0.5, torch.zeros_like(k), do * 0.5


def _sdpa_stand_in(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    if attn_mask is not None:
        raise NotImplementedError('activation_memory: the flash stand-in has no attention mask')
    return _FlashSDPAStandIn.apply(q, k, v)


class CudaAutocastPolicy(TorchFunctionMode):
    """CPU autocast differs from CUDA autocast in the ops that run in fp32: on CUDA, layer_norm, exp, rsqrt,
    pow, softplus, log*, logsumexp cast their inputs to fp32 and linalg_vector_norm / norm / sum / softmax /
    cumsum compute and return fp32 (torch's CUDA autocast lists); on the CPU they keep bf16. Emulated here for
    the ops these models call, so that the dtypes (and the saved copies) are those of the GPU run."""

    FP32 = {F.layer_norm, torch.layer_norm, torch.exp, torch.Tensor.exp, torch.rsqrt, torch.Tensor.rsqrt,
            torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, F.softplus, torch.log, torch.Tensor.log,
            torch.log1p, torch.Tensor.log1p, torch.expm1, torch.Tensor.expm1, torch.logsumexp,
            torch.Tensor.logsumexp, torch.reciprocal, torch.Tensor.reciprocal, F.group_norm}
    FP32_DTYPE = {torch.linalg.vector_norm, torch.norm, torch.Tensor.norm, torch.sum, torch.Tensor.sum,
                  torch.softmax, torch.Tensor.softmax, F.softmax, F.log_softmax, torch.cumsum, torch.Tensor.cumsum}

    @staticmethod
    def _low(t):
        return isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_autocast_enabled('cpu'):
            return func(*args, **kwargs)
        if func in self.FP32:
            args = [a.float() if self._low(a) else a for a in args]
            kwargs = {k: (v.float() if self._low(v) else v) for k, v in kwargs.items()}
            with torch.autocast('cpu', enabled=False):
                return func(*args, **kwargs)
        if func is F.normalize:  # its norm runs as linalg_vector_norm(dtype=fp32) on CUDA: fp32 result
            x, p, dim, eps = (list(args) + [kwargs.get('p', 2.0), kwargs.get('dim', 1), kwargs.get('eps', 1e-12)][len(args) - 1:])[:4]
            with torch.autocast('cpu', enabled=False):
                denom = torch.linalg.vector_norm(x, p, dim, keepdim=True, dtype=torch.float32 if self._low(x) else None)
                return x / denom.clamp_min(eps).expand_as(x)
        if func in self.FP32_DTYPE and kwargs.get('dtype') is None and any(self._low(a) for a in args):
            with torch.autocast('cpu', enabled=False):
                return func(*args, **dict(kwargs, dtype=torch.float32))
        return func(*args, **kwargs)


# ------------------------------------------------------------------------------------------ the counting
_scan_transient = []  # bytes of each scan backward's transient buffers


def scan_backward_transient_bytes(B, T, H, D, ndir, sequential=False, chunk=None, state_cols=32, split=None):
    """Peak transient fp32 buffers of gka_triton_backward (kernels/gka_function.py _backward).

    Per launch set over n directions: the chunk states hk, hv [n, B*H, NC, BD, BD] (U, W are stored over
    them), dq, dk, dv [n, B, T, H, D], da, dG [n, B, T, H], dgp [BD/BN, n, B, T, H], and with the split
    backward solve qbar [n, B, T, H, D] (its two launches' hand-over); the states are freed before the
    direction sums [B, T, H, D] x 3. Sequential (two directions one after the other): the first direction's
    gradients stay while the second's launches run, and the second's are added in place.
    chunk, split: the backward's tokens per chunk and whether its solve kernel is split (None: the default
    config's at head dim D)."""
    from gka_kernels.gka_function import GKAKernelConfig, chunk_sizes, padded_head_dim, split_backward
    BD = padded_head_dim(D)
    cfg = GKAKernelConfig(chunk=chunk, split_backward=split)
    NC = math.ceil(T / chunk_sizes(cfg, D)[1])
    per_dir_states = 2 * B * H * NC * BD * BD * 4 + (B * T * H * D * 4 if split_backward(cfg, D) else 0)
    per_dir_grads = 3 * B * T * H * D * 4 + (2 + BD // min(BD, state_cols)) * B * T * H * 4
    if sequential and ndir == 2:
        return per_dir_states + 2 * per_dir_grads
    return max(ndir * (per_dir_states + per_dir_grads), ndir * per_dir_grads + 3 * B * T * H * D * 4)


def _record_scan_transient(B, T, H, D, ndir, sequential=False):
    _scan_transient.append((B, T, H, D, ndir, sequential))


def _is_param_copy(t, depth=3):
    """True for a cast / transpose / view of a parameter (autocast's weight copies): batch-independent."""
    fn = t.grad_fn
    for _ in range(depth):
        if fn is None:
            return False
        nxt = [f for f, _ in fn.next_functions if f is not None]
        if len(nxt) != 1:
            return False
        if type(nxt[0]).__name__ == 'AccumulateGrad':
            return True
        fn = nxt[0]
    return False


class SavedTensorCounter:
    """Context manager: records every saved tensor's storage once, with its module, shape, dtype, producer."""

    def __init__(self, model):
        self.model = model
        self.stack = ['<top>']
        self.records = {}  # storage key -> dict
        # the recorded tensors, held until the count ends: a storage freed during the forward (a temporary
        # saved by a graph that is dropped, a checkpoint's inner tensors) could otherwise hand its address to
        # a later one, which the (data_ptr, nbytes) key would then take for the same storage
        self._alive = []
        self.param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._handles = []
        self.region_bytes = []  # per outermost checkpoint: what its region saves when the backward recomputes it

    def _key(self, t):
        s = t.untyped_storage()
        return (s.data_ptr(), s.nbytes()) if s.data_ptr() else id(s)

    def _record(self, t, how):
        if not isinstance(t, torch.Tensor) or t.device.type == 'meta':
            return
        s = t.untyped_storage()
        if s.data_ptr() in self.param_ptrs:
            return
        key = self._key(t)
        if key in self.records:
            return
        self._alive.append(t)
        producer = t.grad_fn.name() if t.grad_fn is not None else ('input' if not t.requires_grad else 'leaf')
        self.records[key] = dict(module=self.stack[-1], shape=tuple(t.shape), dtype=str(t.dtype).replace('torch.', ''),
                                 bytes=s.nbytes(), producer=producer, how=how, param_copy=_is_param_copy(t))

    def _push(self, name):
        self.stack.append(name)

    def _pop(self):
        self.stack.pop()

    def _pack(self, t):
        self._record(t, 'saved')
        return t

    def __enter__(self):
        for name, m in self.model.named_modules():
            self._handles.append(m.register_forward_pre_hook(lambda m, a, n=name: self._push(n)))
            self._handles.append(m.register_forward_hook(lambda m, a, o: self._pop()))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        self._orig_ckpt = torch.utils.checkpoint.checkpoint

        depth = [0]

        def ckpt(fn, *args, **kwargs):
            # an outermost checkpoint keeps its tensor inputs alive (nested ones are dropped with it) and, with
            # the selective policy (layers/mixer_parts.py), the outputs of the ops it keeps; in the backward it
            # holds what its region saves while that region's backward runs (`region_bytes`)
            if depth[0] == 0:
                for a in list(args) + list(kwargs.values()):
                    if isinstance(a, torch.Tensor) and a.requires_grad:
                        self._record(a, 'checkpoint input')
                fn = self._counting_region(fn, getattr(kwargs.get('context_fn'), 'keeps_scans', False))
            depth[0] += 1
            try:
                return self._orig_ckpt(fn, *args, **kwargs)
            finally:
                depth[0] -= 1
        torch.utils.checkpoint.checkpoint = ckpt
        return self

    def _counting_region(self, fn, selective):
        """fn, run so that what its region saves is counted into region_bytes (one entry per region) and,
        for a selective checkpoint, the outputs of the kept ops are recorded as kept."""
        counter = self

        class KeptOutputs(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if func in mixer_parts.kept_ops():
                    for t in torch.utils._pytree.tree_leaves(out):
                        counter._record(t, 'kept (selective recompute)')
                return out

        def run(*args, **kwargs):
            seen, total = set(), [0]

            def pack(t):
                key = self._key(t)
                if key not in seen and key not in self.records and t.untyped_storage().data_ptr() not in \
                        self.param_ptrs and t.device.type != 'meta':
                    seen.add(key)
                    total[0] += t.untyped_storage().nbytes()
                    self._alive.append(t)
                return t
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                    (KeptOutputs() if selective else contextlib.nullcontext()):
                out = fn(*args, **kwargs)
            self.region_bytes.append(total[0])
            return out
        return run

    def __exit__(self, *exc):
        torch.utils.checkpoint.checkpoint = self._orig_ckpt
        self._hooks.__exit__(*exc)
        for h in self._handles:
            h.remove()
        return False


@contextlib.contextmanager
def gpu_code_paths():
    """Route the GKA scan through the Triton stand-in and SDPA through the flash stand-in; CUDA autocast dtypes."""
    import gka_vision.layers.gka_mixer as bi_mixer
    import gka_vision.layers.gka_vision_mixer as one_mixer
    orig = (gka_scan_mod.resolve_backend, gka_scan_mod._triton_module, F.scaled_dot_product_attention,
            bi_mixer.gka_scan_bidirectional, one_mixer.gka_scan)
    gka_scan_mod.resolve_backend = lambda backend, device: 'triton' if backend in ('auto', 'triton') else backend
    gka_scan_mod._triton_module = lambda: _StandInTritonModule
    F.scaled_dot_product_attention = _sdpa_stand_in
    bi_mixer.gka_scan_bidirectional = _recording(orig[3], True)
    one_mixer.gka_scan = _recording(orig[4], False)
    try:
        with CudaAutocastPolicy():
            yield
    finally:
        (gka_scan_mod.resolve_backend, gka_scan_mod._triton_module, F.scaled_dot_product_attention,
         bi_mixer.gka_scan_bidirectional, one_mixer.gka_scan) = orig


_region_bytes = []  # count_saved's last forward: bytes saved inside each outermost checkpointed region


def count_saved(model, fn, dtype=torch.bfloat16):
    """Run fn() (a forward through `model`) on the GPU code paths under autocast and count what it saves.

    Returns (records, output): one record per storage (module, shape, dtype, bytes, producer, how)."""
    _scan_transient.clear()
    with gpu_code_paths(), SavedTensorCounter(model) as counter, \
            torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32):
        out = fn()
    _region_bytes[:] = counter.region_bytes
    return list(counter.records.values()), out


def count_forward(model, img_size, batch, dtype=torch.bfloat16, in_chans=3):
    """One training forward (+ cross-entropy loss) at `batch`: list of saved-tensor records, scan shapes."""
    x = torch.randn(batch, in_chans, img_size, img_size)
    target = torch.zeros(batch, dtype=torch.long)
    model.train()
    records, loss = count_saved(model, lambda: F.cross_entropy(model(x), target), dtype)
    del loss
    return records, list(_scan_transient)


def _group(records, key):
    out = defaultdict(int)
    for r in records:
        out[key(r)] += r['bytes']
    return out


def measure(name, img_size=1024, batch=16, kwargs=None, dtype=torch.bfloat16, intercept_img_size=128):
    """Saved-activation bytes of `name` at (img_size, batch), per module and in total, plus state bytes.

    The forward runs once at (img_size, batch 1); the batch-independent part of each module's count (autocast's
    bf16 weight copies) is the intercept of two cheap runs at batch 1 and 2 at intercept_img_size; the rest
    is per sample and scales with the batch.
    """
    torch.manual_seed(0)
    kw = dict(kwargs or {})
    if name.startswith('gka'):
        kw.setdefault('backend', 'auto')

    def build(size):
        torch.manual_seed(0)
        return timm.create_model(name, img_size=size, **kw) if name.startswith(('gka_', 'deit', 'vit')) \
            else timm.create_model(name, **kw)
    small = build(intercept_img_size)
    a1 = _group(count_forward(small, intercept_img_size, 1, dtype)[0], lambda r: r['module'])
    a2 = _group(count_forward(small, intercept_img_size, 2, dtype)[0], lambda r: r['module'])
    intercept = {m: max(0, 2 * a1.get(m, 0) - a2.get(m, 0)) for m in set(a1) | set(a2)}
    model = build(img_size)
    r1, s1 = count_forward(model, img_size, 1, dtype)
    by_mod1 = _group(r1, lambda r: r['module'])
    per_module = {m: intercept.get(m, 0) + (b - intercept.get(m, 0)) * batch for m, b in by_mod1.items()}
    total = sum(per_module.values())
    n_params = sum(p.numel() for p in model.parameters())
    state = 16 * n_params  # fp32 param + grad + AdamW exp_avg + exp_avg_sq
    transient = max((scan_backward_transient_bytes(batch, T, H, D, nd, sq) for (_, T, H, D, nd, sq) in s1),
                    default=0)
    recompute = max(_region_bytes, default=0) * batch  # the largest checkpointed region, recomputed
    images = batch * 3 * img_size * img_size * 4
    return dict(model=name, img_size=img_size, batch=batch, kwargs=kwargs or {}, params=n_params,
                saved_bytes=total, state_bytes=state, scan_transient_bytes=transient, input_bytes=images,
                recompute_transient_bytes=recompute,
                predicted_peak_bytes=total + state + transient + recompute + images,
                per_module=per_module, records_b1=r1, count_batch=1)


def block_breakdown(res, prefix, batch):
    """Tensor-level list of one block's saved tensors, scaled from the count batch to `batch`."""
    rows = [r for r in res['records_b1'] if r['module'] == prefix or r['module'].startswith(prefix + '.')]
    scale = batch / res['count_batch']
    return sorted(({**r, 'bytes': r['bytes'] * (1 if r['param_copy'] else scale)} for r in rows),
                  key=lambda r: -r['bytes'])


def _parse_kwargs(items):
    out = {}
    for item in items or []:
        k, _, v = item.partition('=')
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('models', nargs='+')
    ap.add_argument('--img-size', type=int, default=1024)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float16', 'float32'])
    ap.add_argument('--kwargs', nargs='*', default=[], help='model kwargs, key=value (e.g. recompute_mixer=True)')
    ap.add_argument('--breakdown', default=None, help='module prefix to list tensor by tensor (e.g. blocks.0)')
    ap.add_argument('--json', default=None, help='write the results here')
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    kwargs = _parse_kwargs(args.kwargs)
    results = []
    for name in args.models:
        res = measure(name, args.img_size, args.batch, kwargs if name.startswith('gka') else {},
                      getattr(torch, args.dtype))
        results.append(res)
        print(f"{name} {res['kwargs'] or ''} @ {args.img_size}px batch {args.batch} ({args.dtype} autocast): "
              f"saved activations {res['saved_bytes'] / GB:.2f} GiB; params+grads+AdamW {res['state_bytes'] / GB:.3f} GiB; "
              f"scan backward transient {res['scan_transient_bytes'] / GB:.2f} GiB; recomputed region {res['recompute_transient_bytes'] / GB:.2f} GiB; images {res['input_bytes'] / GB:.2f} GiB; "
              f"predicted peak {res['predicted_peak_bytes'] / GB:.2f} GiB")
        blocks = defaultdict(float)
        for m, b in res['per_module'].items():
            parts = m.split('.')
            blocks['.'.join(parts[:2]) if parts[0] in ('blocks', 'stages') and len(parts) > 1 else parts[0]] += b
        print('  per top-level module (GiB): ' + ', '.join(f'{k} {v / GB:.3f}' for k, v in sorted(blocks.items())))
        if args.breakdown:
            prefix = args.breakdown
            per_mod = {m: b for m, b in res['per_module'].items() if m == prefix or m.startswith(prefix + '.')}
            print(f'  {prefix}: {sum(per_mod.values()) / 1e6:.1f} MB; per module (MB):')
            for m, b in sorted(per_mod.items(), key=lambda kv: -kv[1]):
                print(f'    {m:40s} {b / 1e6:9.1f}')
            print('  tensors (MB, shape at batch 1, producer of the tensor, module that saved it):')
            for r in block_breakdown(res, prefix, args.batch):
                print(f"    {r['bytes'] / 1e6:8.1f}  {r['dtype']:8s} {str(r['shape']):28s} {r['producer']:26s} "
                      f"{r['module']} ({r['how']})")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([{k: v for k, v in r.items() if k != 'records_b1'} for r in results], f, indent=1)
    return results


if __name__ == '__main__':
    main()

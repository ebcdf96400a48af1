"""torch.compile on CUDA with the Triton (and mamba_ssm, when importable) scans; skipped without CUDA.

    pytest -q tests/gpu/test_compile_gpu.py            # ~10 min on one H200 (Inductor compiles each model)

- every registered model, at its own widths and head counts but 2 blocks (hierarchical: one per stage, two in
  the last two stages so both mixer and attention blocks run; GKA_GPU_FULL_DEPTH=1 for the registered depths),
  compiles with fullgraph=True and backend 'auto' (Triton on CUDA), and under bf16 autocast its forward and
  parameter gradients are as close to an fp32 eager run as the eager bf16 run is (and close to it directly);
- torch.library.opcheck of the Triton ops on CUDA tensors (fp32 and bf16), and of mamba_ssm's when it imports;
- mode="reduce-overhead" (CUDA graphs) runs training steps that match eager and lower the loss.
"""
import os

import pytest
import timm
import torch
import torch.nn.functional as F

import gka_vision  # noqa: F401  (registers the models and the ops)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

FAMILIES = ('gka_vit', 'mamba_vim', 'gkavision', 'mambavision')
MODELS = [name for fam in FAMILIES for name in timm.list_models(module=fam)]
FULL = os.environ.get('GKA_GPU_FULL_DEPTH', '0') == '1'


def make(name, seed=0):
    kwargs = dict(num_classes=10, drop_rate=0., drop_path_rate=0.)
    if not FULL:
        hierarchical = name.startswith(('gkavision', 'mambavision'))
        kwargs.update(depths=(1, 1, 2, 2)) if hierarchical else kwargs.update(depth=2)
    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs).cuda().train()


def step(fn, x, y, model, amp):
    with torch.autocast('cuda', dtype=torch.bfloat16, enabled=amp):
        out = fn(x)
        loss = F.cross_entropy(out.float(), y)
    loss.backward()
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    for p in model.parameters():
        p.grad = None
    return out.detach().float(), grads


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize('name', MODELS)
def test_compiled_model_matches_eager_bf16(name):
    model = make(name)
    gen = torch.Generator(device='cuda').manual_seed(1)
    x = torch.randn(2, 3, 224, 224, device='cuda', generator=gen)
    y = torch.randint(0, 10, (2,), device='cuda', generator=gen)
    ref_out, ref_grads = step(model, x, y, model, amp=False)          # fp32 eager
    eager_out, eager_grads = step(model, x, y, model, amp=True)       # bf16 eager
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    comp_out, comp_grads = step(compiled, x, y, model, amp=True)      # bf16 compiled (the same parameters)
    assert torch.isfinite(comp_out).all() and torch.isfinite(comp_grads).all()
    e_out, c_out = rel(eager_out, ref_out), rel(comp_out, ref_out)
    e_grad, c_grad = rel(eager_grads, ref_grads), rel(comp_grads, ref_grads)
    msg = f'{name}: output error vs fp32 eager {c_out:.2e} (bf16 eager {e_out:.2e}), grads {c_grad:.2e} ({e_grad:.2e})'
    print(msg)
    assert c_out <= 2 * e_out + 2e-3 and c_grad <= 2 * e_grad + 5e-3, msg
    assert rel(comp_out, eager_out) <= 5e-2 and rel(comp_grads, eager_grads) <= 1e-1, msg


def _gka_inputs(dtype, B=2, T=67, H=2, D=64):
    gen = torch.Generator(device='cuda').manual_seed(0)
    r = lambda *s: torch.randn(*s, device='cuda', generator=gen)  # noqa: E731
    q = F.normalize(r(B, T, H, D), dim=-1)
    beta = torch.rand(B, T, H, 1, device='cuda', generator=gen)
    k = F.normalize(r(B, T, H, D), dim=-1) * beta
    ins = [q, k, r(B, T, H, D) * beta, torch.rand(B, T, H, device='cuda', generator=gen)]
    gates = [-0.5 * torch.rand(B, T, H, device='cuda', generator=gen) for _ in range(2)]
    return [t.to(dtype).requires_grad_() for t in ins] + [g.requires_grad_() for g in gates]


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_opcheck_triton_gka_ops_on_cuda(dtype):
    ops = torch.ops.gka_vision
    q, k, v, a, g, g2 = _gka_inputs(dtype)
    scale = q.shape[-1] ** -0.5
    for reverse in (False, True):
        torch.library.opcheck(ops.gka_scan.default, (q, k, v, a, g, None, 0.02, 30, scale, reverse, 'triton', ''))
    for sequential in (False, True):
        torch.library.opcheck(ops.gka_scan_bidirectional.default,
                              (q, k, v, a, g, g2, 0.02, 30, scale, sequential, 'triton', ''))
    # a separate key gate goes to the torch backend (the kernels have none): the op of that path, on CUDA
    torch.library.opcheck(ops.gka_scan.default, (q, k, v, a, g, g2, 0.02, 30, scale, False, 'torch', ''))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_opcheck_selective_scan_ops_on_cuda(dtype):
    from gka_vision.ops.selective_scan import available_backends

    gen = torch.Generator(device='cuda').manual_seed(0)
    b, d, L, n = 2, 64, 197, 16
    r = lambda *s: torch.randn(*s, device='cuda', generator=gen)  # noqa: E731
    ins = [r(b, d, L).to(dtype), r(b, d, L).to(dtype), -(torch.rand(d, n, device='cuda', generator=gen) + 0.2),
           r(b, n, L).to(dtype), r(b, n, L).to(dtype), r(d), r(b, d, L).to(dtype), r(d) - 2]
    ins = [t.requires_grad_() for t in ins]
    for backend in ['triton', 'torch'] + (['mamba_ssm'] if 'mamba_ssm' in available_backends('cuda') else []):
        for reverse in (False, True):
            torch.library.opcheck(torch.ops.gka_vision.selective_scan.default, (*ins, True, reverse, backend))
        torch.library.opcheck(torch.ops.gka_vision.selective_scan.default,
                              (*ins[:5], None, None, None, False, False, backend))


@pytest.mark.parametrize('name', ['gka_tiny_patch16_224', 'gkavision_tiny', 'mamba_vim_tiny_patch16_224'])
def test_reduce_overhead_training_steps(name):
    """CUDA graphs (mode='reduce-overhead') around the whole model: 6 AdamW steps on one batch equal the eager
    steps' losses (bf16 autocast) and lower the loss."""
    gen = torch.Generator(device='cuda').manual_seed(1)
    x = torch.randn(8, 3, 224, 224, device='cuda', generator=gen)
    y = torch.randint(0, 10, (8,), device='cuda', generator=gen)
    losses = {}
    for mode in ('eager', 'reduce-overhead'):
        model = make(name)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        torch._dynamo.reset()
        fn = model if mode == 'eager' else torch.compile(model, mode=mode, fullgraph=True)
        losses[mode] = []
        for _ in range(6):
            if mode != 'eager':
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast('cuda', dtype=torch.bfloat16):
                loss = F.cross_entropy(fn(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[mode].append(loss.item())
    eager, graphed = losses['eager'], losses['reduce-overhead']
    assert all(torch.isfinite(torch.tensor(graphed))), graphed
    assert graphed[-1] < graphed[0], graphed
    for a, b in zip(eager, graphed):
        assert abs(a - b) <= 5e-2 * abs(a) + 1e-2, (eager, graphed)


def test_compiled_step_does_not_retrace_the_scan_kernels():
    """The Inductor graph holds the scans as custom-op calls: the kernels of gka_kernels are launched by the op,
    never re-generated by Inductor (the fp64 scalar failure of _chebyshev came from such a re-generation)."""
    from torch._inductor.utils import run_and_get_code

    model = make('gka_tiny_patch16_224')
    x = torch.randn(2, 3, 224, 224, device='cuda')
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        _, codes = run_and_get_code(lambda: compiled(x))
    code = '\n'.join(codes)
    assert 'gka_vision.gka_scan_bidirectional' in code
    assert '_chebyshev' not in code and '_fwd_solve_kernel' not in code


@pytest.mark.parametrize('accum_steps', [1, 2])
def test_train_py_reduce_overhead_matches_eager(tmp_path, accum_steps):
    """train.py's loop with model.compile_mode=reduce-overhead (CUDA graphs; the loop marks a graph iteration per
    update): two epochs of a small gka_vit on the Triton scans give the eager run's per-update losses (bf16
    autocast); with two micro-steps per update too, whose gradients accumulate across graph replays."""
    import csv

    from fashion_mnist import tiny_cfg, write_shard_folder  # tests/fashion_mnist.py
    from gka_vision.engine.trainer import run

    data = write_shard_folder(tmp_path / 'data', {'train': [100, 100], 'test': [50]})
    model = ['model.kwargs={img_size: 28, patch_size: 7, embed_dim: 64, depth: 2, num_heads: 2, num_iter: 30, backend: auto}',
             'optim.lr=2e-3', f'optim.accum_steps={accum_steps}', 'checkpoint.export=false']
    losses = {}
    for mode in ('eager', 'reduce-overhead'):
        torch._dynamo.reset()
        extra = [] if mode == 'eager' else ['model.compile=true', f'model.compile_mode={mode}']
        run(tiny_cfg(data, tmp_path / mode, *model, *extra))
        with open(tmp_path / mode / 'steps.csv', newline='') as f:
            losses[mode] = [float(r['loss']) for r in csv.DictReader(f)]
    eager, graphed = losses['eager'], losses['reduce-overhead']
    assert len(eager) == len(graphed) == 2 * 200 // (20 * accum_steps)
    assert all(torch.isfinite(torch.tensor(graphed))), graphed
    assert sum(graphed[-3:]) < sum(graphed[:3]), graphed
    for a, b in zip(eager, graphed):
        assert abs(a - b) <= 5e-2 * abs(a) + 1e-2, (eager, graphed)

"""torch.compile of every model family on the CPU torch backend: no graph break (fullgraph=True), forward and
parameter gradients equal to eager; and `train.py ... model.compile=true`.

The scans are custom ops (gka_vision/ops), so Dynamo and AOTAutograd see one opaque node per scan and never
trace into the backends. Inductor on the CPU needs a C++ compiler and takes tens of seconds per model: one
model per family runs through Inductor (slow tests); every registered model runs through AOTAutograd with
fullgraph=True ("aot_eager": the same graph capture and joint forward/backward graph, no code generation).
"""
import copy
import os
import subprocess
import sys

import pytest
import timm
import torch

import gka_vision  # noqa: F401  (registers the models and the ops)

from tiny_models import FAMILIES, REPRESENTATIVE, tiny_model  # tests/tiny_models.py

ALL_MODELS = [(fam, name) for fam in FAMILIES for name in timm.list_models(module=fam)]


def step(fn, x, model=None):
    """Output and parameter gradients of one step of fn (a model or its compiled wrapper around `model`)."""
    out = fn(x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad for n, p in (model or fn).named_parameters()}


def assert_same_step(got, expected):
    (out, grads), (out_ref, grads_ref) = got, expected
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5 * out_ref.abs().max().item())
    # one absolute scale for all gradients: biases in front of a BatchNorm have exact-zero gradients, ~1e-9 noise
    scale = max(g.abs().max().item() for g in grads_ref.values())
    for n, g in grads_ref.items():
        assert grads[n] is not None, n
        torch.testing.assert_close(grads[n], g, rtol=1e-3, atol=1e-4 * scale, msg=lambda m, n=n: f'{n}: {m}')


def test_all_model_families_listed():
    registered = {name for fam in FAMILIES for name in timm.list_models(module=fam)}
    ours = {n for n in timm.list_models() if n.startswith(('gka_', 'gkavision_', 'mamba_vim_', 'mambavision_'))}
    assert ours == registered and all(timm.list_models(module=fam) for fam in FAMILIES)


@pytest.mark.parametrize('family,name', ALL_MODELS)
def test_fullgraph_capture_and_joint_graph(family, name):
    """Dynamo captures the whole model (fullgraph=True raises on any graph break) and AOTAutograd builds the
    forward and backward graphs around the scan ops; the compiled step equals the eager one."""
    model, x = tiny_model(family, name)
    expected = step(copy.deepcopy(model), x)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    assert_same_step(step(compiled, x, model), expected)


@pytest.mark.slow
@pytest.mark.parametrize('family', list(FAMILIES))
def test_inductor_fullgraph_matches_eager(family):
    model, x = tiny_model(family, REPRESENTATIVE[family])
    expected = step(copy.deepcopy(model), x)
    compiled = torch.compile(model, fullgraph=True)
    assert_same_step(step(compiled, x, model), expected)
    # eval mode (no recompute of the elementwise chains) compiles as well
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), copy.deepcopy(model)(x), rtol=1e-4, atol=1e-6)


def test_no_recompile_across_steps():
    """A training loop calls the compiled model with new data every step: one compilation."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model, x = tiny_model('gka_vit', 'gka_tiny_patch16_224')
    counter = CompileCounter()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    for seed in range(3):
        compiled(torch.randn_like(x)).sum().backward()
    assert counter.frame_count == 1


@pytest.mark.slow
def test_train_py_with_model_compile(tmp_path):
    """`train.py <bundled config> model.compile=true`: one short epoch on 200 bundled images, compiled."""
    from fashion_mnist import REPO, write_shard_folder  # tests/fashion_mnist.py

    root = write_shard_folder(tmp_path / 'data', {'train': [120], 'test': [40]})
    out = tmp_path / 'out'
    cmd = [sys.executable, str(REPO / 'train.py'), f'data.root={root}', f'output={out}', 'model.compile=true',
           'sched.epochs=1', 'sched.warmup_epochs=0', 'data.batch_size=40', 'data.val_batch_size=40',
           'data.num_workers=0', 'data.shuffle_buffer=40', 'progress=false', 'verify_export=false',
           'model.kwargs.embed_dim=32', 'model.kwargs.depth=1', 'model.kwargs.num_iter=3']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO / 'tests')))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    import json
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['epochs_done'] == 1
    assert (out / 'weights' / 'model.safetensors').exists()


@pytest.mark.slow
@pytest.mark.parametrize('family', list(FAMILIES))
def test_smaller_last_batch_recompiles_with_a_dynamic_batch(family):
    """A training epoch's last batch can be smaller: Dynamo then recompiles once with a symbolic batch size
    (the scan ops' fake implementations take symbolic shapes); the result still equals eager."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()  # forget the dynamic dims that earlier compilations of the same classes marked
    model, x = tiny_model(family, REPRESENTATIVE[family])
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    for batch in (2, 3, 5):
        xb = torch.randn(batch, *x.shape[1:], generator=torch.Generator().manual_seed(batch))
        expected = step(copy.deepcopy(model), xb)
        for p in model.parameters():
            p.grad = None
        assert_same_step(step(compiled, xb, model), expected)
    assert counter.frame_count == 2  # static batch 2, then one dynamic-batch graph for 3 and 5


def _set_checkpointing(model, family, option):
    if option == 'grad_checkpointing':
        model.set_grad_checkpointing(True)
    elif hasattr(model, f'set_{option}'):
        getattr(model, f'set_{option}')(True)
    else:
        pytest.skip(f'{family} has no {option} option')


@pytest.mark.parametrize('option', ['grad_checkpointing', 'recompute_mixer', 'selective_recompute'])
@pytest.mark.parametrize('family', list(FAMILIES))
def test_fullgraph_with_activation_checkpointing(family, option):
    """timm's set_grad_checkpointing and this project's recompute_mixer and selective_recompute
    (torch.utils.checkpoint around blocks or mixers, with the scan ops inside; the selective one with a policy
    that keeps the scans' outputs) capture as one graph too."""
    model, x = tiny_model(family, REPRESENTATIVE[family])
    _set_checkpointing(model, family, option)
    expected = step(copy.deepcopy(model), x)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    assert_same_step(step(compiled, x, model), expected)


@pytest.mark.slow
@pytest.mark.parametrize('family', list(FAMILIES))
def test_inductor_fullgraph_with_selective_recompute(family):
    """Inductor partitions the selective policy's graph (the scans saved, the rest recomputed) and matches eager."""
    model, x = tiny_model(family, REPRESENTATIVE[family])
    _set_checkpointing(model, family, 'selective_recompute')
    expected = step(copy.deepcopy(model), x)
    compiled = torch.compile(model, fullgraph=True)
    assert_same_step(step(compiled, x, model), expected)

"""Export paths of one model per family (tiny configs, CPU), each checked against eager outputs:
torch.export, torch.jit.trace + save + load (in a fresh process that only imports gka_vision), and ONNX
through the dynamo exporter and the legacy TorchScript exporter, run by ONNX Runtime (skipped when onnx /
onnxruntime / onnxscript are not installed; they are in the [dev] extras). docs/export.md has the recipes."""
import subprocess
import sys

import pytest
import torch

import gka_vision  # noqa: F401

from tiny_models import FAMILIES, REPRESENTATIVE, tiny_model  # tests/tiny_models.py

FAMS = list(FAMILIES)


def eval_model(family):
    model, x = tiny_model(family, REPRESENTATIVE[family])
    model.eval()
    with torch.no_grad():
        ref = model(x)
    return model, x, ref


def close(out, ref, atol=1e-5):
    out = torch.as_tensor(out)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=atol * max(ref.abs().max().item(), 1.0))


@pytest.mark.parametrize('family', FAMS)
def test_torch_export(family, tmp_path):
    model, x, ref = eval_model(family)
    ep = torch.export.export(model, (x,))
    nodes = [str(n.target) for n in ep.graph.nodes if n.op == 'call_function']
    assert any('gka_vision.' in t for t in nodes), nodes  # the scans are op nodes of the program
    close(ep.module()(x), ref)
    # saved and loaded as a .pt2 program
    path = tmp_path / 'model.pt2'
    torch.export.save(ep, path)
    close(torch.export.load(path).module()(x), ref)
    # a dynamic batch dimension
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim('batch', min=1, max=64)},))
    x3 = torch.cat([x, x[:1]])
    with torch.no_grad():
        close(ep.module()(x3), model(x3))


_LOAD_SCRIPT = r"""
import sys, torch
import gka_vision  # registers the custom ops the saved program calls
m = torch.jit.load(sys.argv[1])
x = torch.load(sys.argv[2])
torch.save(m(x), sys.argv[3])
"""


@pytest.mark.parametrize('family', FAMS)
def test_jit_trace_save_load(family, tmp_path):
    model, x, ref = eval_model(family)
    traced = torch.jit.trace(model, (x,))
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert kinds & {'gka_vision::gka_scan', 'gka_vision::gka_scan_bidirectional', 'gka_vision::selective_scan'}
    path = tmp_path / 'model.ts'
    traced.save(str(path))
    torch.save(x, tmp_path / 'x.pt')
    proc = subprocess.run([sys.executable, '-c', _LOAD_SCRIPT, str(path), str(tmp_path / 'x.pt'),
                           str(tmp_path / 'out.pt')], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    close(torch.load(tmp_path / 'out.pt'), ref)


def _onnx_run(path, x):
    ort = pytest.importorskip('onnxruntime')
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize('family', FAMS)
def test_onnx_dynamo_exporter(family, tmp_path):
    pytest.importorskip('onnxscript')
    pytest.importorskip('onnxruntime')
    model, x, ref = eval_model(family)
    path = tmp_path / 'model.onnx'
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    close(_onnx_run(path, x), ref)


@pytest.mark.parametrize('family', FAMS)
def test_onnx_legacy_exporter(family, tmp_path):
    """The TorchScript-based exporter (dynamo=False). mamba_vim's norm is timm's RmsNorm, which calls
    torch's fused rms_norm: the legacy exporter has no symbolic for it (timm's own RmsNorm models fail the same
    way), so that family is checked to fail for that reason only."""
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    model, x, ref = eval_model(family)
    path = tmp_path / 'model.onnx'
    if family == 'mamba_vim':
        with pytest.raises(Exception, match='rms_norm'):
            torch.onnx.export(model, (x,), str(path), dynamo=False)
        return
    torch.onnx.export(model, (x,), str(path), dynamo=False)
    close(_onnx_run(path, x), ref)


def test_onnx_at_the_registered_resolution(tmp_path):
    """gka_tiny at 224 px (one block): several 64-token chunks with a padded tail, both ONNX exporters."""
    pytest.importorskip('onnxscript')
    import timm

    torch.manual_seed(0)
    model = timm.create_model('gka_tiny_patch16_224', depth=1, num_iter=5).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
    for dynamo in (True, False):
        path = tmp_path / f'model_{dynamo}.onnx'
        torch.onnx.export(model, (x,), str(path), dynamo=dynamo)
        close(_onnx_run(path, x), ref)

"""benchmarks/compare.py end to end on CPU (--smoke), and its FLOP counting of attention and scans."""
import json
import os

import pytest
import torch

import gka_vision  # noqa: F401

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py


def _compare():
    return load_benchmark('compare')


def test_smoke_run_writes_table_json_and_plots(tmp_path):
    pytest.importorskip('matplotlib')
    torch.set_num_threads(1)
    result = _compare().main(['--smoke', '--out', str(tmp_path)])
    data = json.loads((tmp_path / 'compare.json').read_text())
    assert [r['model'].split()[0] for r in data['rows']] == ['mamba_vim_tiny_patch16_224', 'mambavision_tiny']
    for r in data['rows']:
        assert r['params_m'] > 0.1 and r['gmacs'] > 0
        for mode in ('infer', 'train'):
            assert r[mode]['2']['status'] == 'ok' and r[mode]['2']['img_s'] > 0
    assert sorted({(s['model'].split()[0], s['res']) for s in data['sweep']}) == [
        ('mamba_vim_tiny_patch16_224', 64), ('mamba_vim_tiny_patch16_224', 96),
        ('mambavision_tiny', 64), ('mambavision_tiny', 96)]
    assert all(s[m]['img_s'] > 0 for s in data['sweep'] for m in ('infer', 'train'))
    md = (tmp_path / 'compare.md').read_text()
    assert '| mambavision_tiny' in md and 'torch ' in md and 'command:' in md and '96px' in md
    assert len(result['plots']) == 2
    for p in result['plots']:
        assert os.path.getsize(p) > 5000 and open(p, 'rb').read(4) == b'\x89PNG'


def test_gmacs_count_attention_and_scans():
    pytest.importorskip('fvcore')
    from timm.layers import Attention
    cmp = _compare()

    class Net(torch.nn.Module):  # count_gmacs takes images; wrap attention over the flattened pixels
        def __init__(self):
            super().__init__()
            self.attn = Attention(3, num_heads=1, qkv_bias=False)

        def forward(self, x):
            return self.attn(x.flatten(2).transpose(1, 2))

    n, c = 8 * 8, 3
    linear = n * (c * 3 * c + c * c)          # qkv, proj
    sdpa = 2 * n * n * c                        # Q K^T and the weighted sum of V
    assert cmp.count_gmacs(Net(), 8) * 1e9 == pytest.approx(linear + sdpa)

    from gka_vision.ops.selective_scan import selective_scan_macs
    model = cmp.build_model('mamba_vim_tiny_patch16_224', 32, 'torch', torch.device('cpu'), dict(depth=1))
    gmacs = cmp.count_gmacs(model, 32)
    scans = 2 * selective_scan_macs(1, 384, 4, 16, True, True)  # 2x2 tokens, one block, two directions
    assert gmacs * 1e9 > scans and gmacs * 1e9 - scans < 2e7  # the rest: patch embed, projections

"""benchmarks/compare.py's bookkeeping, fast on CPU with stand-in models: priority order of the plan, the time
budget (later points recorded as skipped, not run), per-point errors recorded without aborting the run, the
json written before and during the run, and --render from the json."""
import json
import os
import signal
import time

import pytest
import torch
from torch import nn

from benchmark_scripts import load_benchmark  # tests/benchmark_scripts.py


def _compare():
    return load_benchmark('compare')


class _Net(nn.Module):
    def __init__(self, kind, backend=None):
        super().__init__()
        self.kind, self.num_classes, self.backend = kind, 10, backend or '-'
        self.body = nn.Sequential(nn.Conv2d(3, 4, 8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x):
        if self.kind == 'slow':
            time.sleep(0.2)
        if self.kind == 'stuck' and self.training:  # like a compilation that does not end
            time.sleep(30)
        if self.kind in ('crash', 'gka_fake') and self.training and self.backend != 'torch':
            raise RuntimeError('triton compile failed: bad block size')
        if self.kind == 'mamba_fake' and self.backend != 'torch':
            time.sleep(0.25)  # clearly slower than the torch scan, also on a loaded CPU
        out = self.body(x)
        return out * float('nan') if self.kind == 'nan' else out


def _fake_build(name, res, backend, device, extra=None):
    if name == 'broken':
        raise ValueError('cannot build this one')
    return _Net(name.split('@')[0], backend).to(device)


_ARGS = ['--device', 'cpu', '--batch-sizes', '2', '--res', '16', '--resolutions', '16', '32', '--sweep-batch', '2',
         '--no-flops', '--no-plots', '--warmup', '1', '--iters', '2', '--dtype', 'fp32']


def test_plan_puts_the_issue_targets_first():
    cmp = _compare()
    tasks = cmp.plan(cmp.parse_args([]))
    # the eager targets (seconds each), then the compiled ones (tens of seconds each to compile)
    assert tasks[:4] == [('bs', m, 128, 'train') for m in (
        'gkavision_tiny', 'mambavision_tiny', 'gka_small_patch16_224', 'mamba_vim_small_patch16_224')]
    assert tasks[4:6] == [('sweep', m, 2048, 'train') for m in ('gka_tiny_patch16_224', 'deit_tiny_patch16_224')]
    assert tasks[6:10] == [('sweep', m, 1024, 'train') for m in ('gka_tiny_patch16_224', 'deit_tiny_patch16_224',
                                                                 'gka_small_patch16_224', 'deit_small_patch16_224')]
    assert tasks[10:14] == [('bs', m, 128, 'train') for m in (
        'gkavision_tiny@compile', 'mambavision_tiny@compile', 'gka_tiny_patch16_224@compile',
        'deit_tiny_patch16_224@compile')]
    assert tasks[14][0] == 'gmacs'
    # compiled rows: the training point at the first batch size, their inference point there last of all
    compiled = [t for t in tasks if '@compile' in t[1]]
    assert compiled[4:] == tasks[-4:] == [('bs', m, 128, 'infer') for m in (
        'gka_tiny_patch16_224@compile', 'deit_tiny_patch16_224@compile', 'gkavision_tiny@compile',
        'mambavision_tiny@compile')]
    assert len(compiled) == 8
    # 10 eager rows: gmacs, 2 batch sizes x 2 modes, 7 resolutions x 2 modes
    assert len(tasks) == len(set(tasks)) == 10 * (1 + 4 + 14) + 4 * 2


def test_compiled_rows_run_only_the_targets_point(tmp_path, monkeypatch):
    """A NAME@compile row never runs the sweep or another batch size (each new shape recompiles); its GMACs are
    its eager model's (counted once, on the eager build); every point records its first step's time."""
    cmp = _compare()
    built = []

    def build(name, res, backend, device, extra=None):
        built.append(name)
        return _fake_build(name, res, backend, device, extra)

    monkeypatch.setattr(cmp, 'build_model', build)
    monkeypatch.setattr(cmp, 'count_gmacs', lambda model, res: 1.5)
    args = [a for a in _ARGS if a != '--no-flops'] + ['--batch-sizes', '2', '4', '--out', str(tmp_path)]
    result = cmp.main(args + ['--models', 'ok', 'ok@compile', 'other@compile'])
    rows = {r['name']: r for r in result['rows']}
    for name in ('ok@compile', 'other@compile'):
        assert set(rows[name]['train']) == set(rows[name]['infer']) == {'2'}
        assert rows[name]['train']['2']['status'] == rows[name]['infer']['2']['status'] == 'ok'
        assert rows[name]['gmacs'] == 1.5
    assert set(rows['ok']['train']) == {'2', '4'}
    assert {s['name'] for s in result['sweep']} == {'ok'}
    assert [t for t in cmp.plan(cmp.parse_args(args + ['--models', 'ok', 'ok@compile', 'other@compile']))
            if t[0] == 'gmacs'] == [('gmacs', 'ok', 224, '-'), ('gmacs', 'other@compile', 224, '-')]
    assert 'other' in built and 'other@compile' in built  # the GMACs build is the eager one
    points = [r[m][b] for r in rows.values() for m in ('train', 'infer') for b in r[m]]
    points += [s[m] for s in result['sweep'] for m in ('train', 'infer')]
    assert all(p['first_step_s'] >= 0 and p['warmup_s'] >= p['first_step_s'] for p in points)
    md = (tmp_path / 'compare.md').read_text()
    assert '## torch.compile (batch 2, 16px)' in md
    c, e = rows['ok@compile']['train']['2'], rows['ok']['train']['2']
    assert (f'| ok@compile | train | {cmp._cell(c)} | {cmp._cell(e)} | {c["img_s"] / e["img_s"]:.2f} '
            f'| {c["first_step_s"]:.1f} | {e["first_step_s"]:.1f} |') in md
    assert '| other@compile | infer |' in md and 'no other batch size and no sweep;' in md


def test_errors_are_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    cmp = _compare()
    monkeypatch.setattr(cmp, 'build_model', _fake_build)
    result = cmp.main(_ARGS + ['--models', 'ok', 'broken', 'nan', 'crash', '--out', str(tmp_path)])
    rows = {r['name']: r for r in result['rows']}
    assert rows['ok']['train']['2']['status'] == 'ok' and rows['ok']['infer']['2']['img_s'] > 0
    for mode in ('train', 'infer'):
        assert rows['broken'][mode]['2']['status'] == 'error'
        assert 'cannot build this one' in rows['broken'][mode]['2']['error']
        assert 'non-finite' in rows['nan'][mode]['2']['error']
    assert rows['crash']['train']['2']['status'] == 'error' and 'bad block size' in rows['crash']['train']['2']['error']
    assert rows['crash']['infer']['2']['status'] == 'ok'
    assert all(s['train']['status'] == ('ok' if s['name'] == 'ok' else 'error') for s in result['sweep'])
    data = json.loads((tmp_path / 'compare.json').read_text())
    assert data['env']['finished'] and data['env']['point_status_counts'] == {'ok': 9, 'error': 15}
    md = (tmp_path / 'compare.md').read_text()
    assert '## Errors' in md and 'cannot build this one' in md and 'bad block size' in md and '## Targets' in md


def test_a_first_step_past_its_limit_is_stopped_and_the_run_goes_on(tmp_path, monkeypatch):
    cmp = _compare()
    monkeypatch.setattr(cmp, 'build_model', _fake_build)
    t0 = time.monotonic()
    result = cmp.main(_ARGS + ['--models', 'stuck', 'ok', '--first-step-limit-s', '0.5', '--out', str(tmp_path)])
    assert time.monotonic() - t0 < 15  # three training points of 'stuck', each stopped after 0.5 s
    rows = {r['name']: r for r in result['rows']}
    stuck = rows['stuck']['train']['2']
    assert stuck['status'] == cmp.TIMEOUT
    assert stuck['error'] == 'FirstStepTimeout: first step (compilation) stopped after 0.5 s'
    assert rows['stuck']['infer']['2']['status'] == rows['ok']['train']['2']['status'] == 'ok'
    assert [s['train']['status'] for s in result['sweep']] == [cmp.TIMEOUT, cmp.TIMEOUT, 'ok', 'ok']
    assert '| timeout |' in (tmp_path / 'compare.md').read_text()
    # torch.compile suppresses some exceptions of its backward compilation: the alarm repeats until the step ends
    t0 = time.monotonic()
    with pytest.raises(cmp.FirstStepTimeout):
        with cmp._time_limit(0.2):
            try:
                time.sleep(10)
            except cmp.FirstStepTimeout:
                time.sleep(10)
    assert time.monotonic() - t0 < 3 and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    # torch.compile raises its own exception from what its backend raised: still a timeout
    try:
        try:
            raise cmp.FirstStepTimeout('x')
        except cmp.FirstStepTimeout as err:
            raise RuntimeError('backend compiler failed') from err
    except RuntimeError as wrapped:
        assert cmp._caused_by(wrapped, cmp.FirstStepTimeout) and not cmp._caused_by(wrapped, KeyError)


def test_time_budget_skips_the_remaining_points(tmp_path, monkeypatch):
    cmp = _compare()
    monkeypatch.setattr(cmp, 'build_model', _fake_build)
    seen = []
    real_measure = cmp.measure

    def spy(*a, **k):  # the json on disk already lists every planned point while the first one runs
        seen.append(json.loads((tmp_path / 'compare.json').read_text())['env']['point_status_counts'])
        return real_measure(*a, **k)

    monkeypatch.setattr(cmp, 'measure', spy)
    t0 = time.monotonic()
    result = cmp.main(_ARGS + ['--models', 'slow', 'ok', '--time-budget-s', '0.1', '--out', str(tmp_path)])
    assert time.monotonic() - t0 < 10
    assert len(seen) == 1 and seen[0] == {'pending': 12}
    rows = {r['name']: r for r in result['rows']}
    assert rows['slow']['train']['2']['status'] == 'ok'  # the first point ran, past the budget
    assert rows['slow']['train']['2']['iters'] == 1      # and stopped timing at the deadline
    skipped = [rows['slow']['infer']['2'], rows['ok']['train']['2'], rows['ok']['infer']['2']]
    skipped += [s[m] for s in result['sweep'] for m in ('train', 'infer')]
    assert all(r['status'] == cmp.SKIPPED for r in skipped)
    assert result['env']['point_status_counts'] == {'ok': 1, cmp.SKIPPED: 11}
    md = (tmp_path / 'compare.md').read_text()
    assert '| skip |' in md and 'time budget: 0.1 s' in md
    # --render rebuilds the markdown (and plots) from the json alone
    os.remove(tmp_path / 'compare.md')
    pytest.importorskip('matplotlib')
    out = cmp.main(['--render', '--out', str(tmp_path)])
    assert (tmp_path / 'compare.md').read_text() == md and len(out['plots']) == 2


def test_target_ratios_in_markdown(tmp_path):
    """Each of the issue's targets is a ratio of two numbers of the run with its verdict: training img/s at the
    first batch size (eager and compiled pairs), at the largest resolution, and training memory at --memory-res."""
    cmp = _compare()
    args = cmp.parse_args(['--batch-sizes', '128', '256', '--resolutions', '512', '2048'])
    ok = lambda v, k='img_s': dict(status='ok', **{k: v})  # noqa: E731
    rows = [dict(name=n, model=n, scan='x', params_m=1.0, gmacs=None, infer={}, train={'128': ok(v), '256': ok(1.0)})
            for n, v in (('gkavision_tiny', 100.0), ('mambavision_tiny', 100.0),
                         ('gkavision_tiny@compile', 150.0), ('mambavision_tiny@compile', 160.0),
                         ('gka_tiny_patch16_224@compile', 50.0), ('deit_tiny_patch16_224@compile', 100.0),
                         ('gkavision_tiny@cudagraphs', 200.0), ('mambavision_tiny@cudagraphs', 250.0),
                         ('gka_small_patch16_224', 50.0))]
    sweep = [dict(name=n, model=n, res=2048, train=ok(v), infer=ok(1.0))
             for n, v in (('gka_tiny_patch16_224', 30.0), ('deit_tiny_patch16_224', 20.0))]
    sweep += [dict(name=n, model=n, res=1024, train=ok(v, 'peak_gb'))
              for n, v in (('gka_tiny_patch16_224', 3.0), ('deit_tiny_patch16_224', 3.0),
                           ('gka_small_patch16_224', 5.0), ('deit_small_patch16_224', 4.0))]
    env = cmp.environment(torch.device('cpu'), ['--x'])
    lines = cmp.target_lines(dict(env=env, args=vars(args), rows=rows, sweep=sweep))
    table = [line for line in lines if line.startswith('| training')]
    assert table == [
        '| training img/s, batch 128, 224px | gkavision_tiny: 100 (x) | mambavision_tiny: 100 (x) | 1.000 '
        '| >= 1.0 | **met** |',
        '| training img/s, batch 128, 224px | gkavision_tiny@compile: 150 (x) | mambavision_tiny@compile: 160 (x) '
        '| 0.938 | >= 1.0 | **NOT met** |',
        '| training img/s, batch 128, 224px | gka_tiny_patch16_224@compile: 50 (x) '
        '| deit_tiny_patch16_224@compile: 100 (x) | 0.500 | >= 0.5 | **met** |',
        '| training img/s, batch 128, 224px | gkavision_tiny@cudagraphs: 200 (x) '
        '| mambavision_tiny@cudagraphs: 250 (x) | 0.800 | >= 1.0 | **NOT met** |',
        '| training img/s, batch 128, 224px | gka_tiny_patch16_224@cudagraphs: - (-) '
        '| deit_tiny_patch16_224@cudagraphs: - (-) | - | >= 0.5 | - |',
        '| training img/s, batch 128, 224px | gka_small_patch16_224: 50 (x) | mamba_vim_small_patch16_224: - (-) '
        '| - | >= 1.0 | - |',  # not measured: no ratio, no verdict
        '| training img/s, 2048px, batch 16 | gka_tiny_patch16_224: 30 (-) | deit_tiny_patch16_224: 20 (-) '
        '| 1.500 | >= 1.0 | **met** |',
        '| training img/s, 2048px, batch 16 | gka_tiny_patch16_224@compile: - (x) '
        '| deit_tiny_patch16_224@compile: - (x) | - | >= 1.0 | - |',  # not in the sweep without --compiled-sweep
        '| training peak GB, 1024px, batch 16 | gka_tiny_patch16_224: 3.00 | deit_tiny_patch16_224: 3.00 | 1.000 '
        '| <= 1 | **met** |',
        '| training peak GB, 1024px, batch 16 | gka_small_patch16_224: 5.00 | deit_small_patch16_224: 4.00 | 1.250 '
        '| <= 1 | **NOT met** |']
    md = tmp_path / 'compare.md'
    cmp.write_markdown(str(md), dict(env=env, args=vars(args), rows=rows, sweep=sweep))
    assert '\n'.join(table) in md.read_text() and '| 1024px train | 2048px train |' in md.read_text()


def test_triton_failure_falls_back_to_torch_scan_and_baselines_get_the_faster_scan(tmp_path, monkeypatch):
    cmp = _compare()
    monkeypatch.setattr(cmp, 'build_model', _fake_build)
    monkeypatch.setattr(cmp, '_project_models', lambda: frozenset({'gka_fake', 'mamba_fake'}))
    monkeypatch.setattr(cmp, 'scan_backend_used', lambda name, device, backend: (
        'selective_scan:' if name.startswith('mamba') else 'gka_scan:') + ('torch' if backend == 'torch' else 'triton'))
    result = cmp.main(_ARGS + ['--models', 'gka_fake', 'gka_fake@compile', 'mamba_fake', '--scan-trials', 'on',
                               '--out', str(tmp_path)])
    rows = {r['name']: r for r in result['rows']}
    gka = rows['gka_fake']
    assert gka['train']['2']['status'] == 'ok' and gka['scan'] == 'gka_scan:torch (fallback)'
    assert 'bad block size' in gka['scan_fallback']
    gka = rows['gka_fake@compile']  # a compiled row keeps its scan: the failure is its result
    assert gka['train']['2']['status'] == 'error' and 'bad block size' in gka['train']['2']['error']
    assert gka['scan'] == 'gka_scan:triton' and 'scan_fallback' not in gka
    mamba = rows['mamba_fake']
    assert set(mamba['scan_trials']) == {'selective_scan:triton', 'selective_scan:torch'}
    assert mamba['scan'] == 'selective_scan:torch (faster than triton)'
    assert mamba['train']['2']['img_s'] == max(v['img_s'] for v in mamba['scan_trials'].values())
    md = (tmp_path / 'compare.md').read_text()
    assert '## Scan trials' in md and 'PyTorch scan used from then on' in md


def test_mamba_baselines_use_mamba_ssm_when_available(tmp_path, monkeypatch):
    """With mamba_ssm's CUDA scan available, the Mamba baselines run with it (column scan) and are not trialled
    unless --scan-trials on, which then times them with every other backend and keeps the fastest; an explicit
    --mamba-backend wins; without it, --backend as before."""
    cmp = _compare()
    built = []

    def build(name, res, backend, device, extra=None):
        built.append((name, backend))
        return _fake_build(name, res, backend, device, extra)

    monkeypatch.setattr(cmp, 'build_model', build)
    monkeypatch.setattr(cmp, '_project_models', lambda: frozenset({'mamba_fake', 'mamba_quick'}))
    monkeypatch.setattr(cmp, 'scan_backend_used', lambda name, device, backend: 'selective_scan:' + backend)
    monkeypatch.setattr(cmp, 'scan_backends', lambda device: ['reference', 'torch', 'triton', 'mamba_ssm'])
    run = lambda model, *a: {r['name']: r for r in cmp.main(  # noqa: E731
        _ARGS + ['--models', model, '--resolutions', '16', '--out', str(tmp_path), *a])['rows']}[model]

    row = run('mamba_quick')
    assert {b for n, b in built} == {'mamba_ssm'} and row['scan'] == 'selective_scan:mamba_ssm'
    assert 'scan_trials' not in row
    assert json.loads((tmp_path / 'compare.json').read_text())['env']['selective_scan_backends'][-1] == 'mamba_ssm'
    assert 'selective-scan backends: reference, torch, triton, mamba_ssm' in (tmp_path / 'compare.md').read_text()

    trial = run('mamba_fake', '--scan-trials', 'on')  # mamba_fake is slow but with the torch scan
    assert list(trial['scan_trials']) == ['selective_scan:mamba_ssm', 'selective_scan:triton', 'selective_scan:torch']
    assert trial['scan'] == 'selective_scan:torch (faster than mamba_ssm)'
    assert trial['train']['2']['img_s'] == max(v['img_s'] for v in trial['scan_trials'].values())

    built.clear()
    run('mamba_quick', '--mamba-backend', 'triton')
    assert {b for n, b in built} == {'triton'}
    monkeypatch.setattr(cmp, 'scan_backends', lambda device: ['reference', 'torch', 'triton'])
    built.clear()
    assert run('mamba_quick', '--backend', 'torch')['scan'] == 'selective_scan:torch'
    assert {b for n, b in built} == {'torch'}


def test_scan_trials_by_default_only_on_cuda_without_mamba_ssm():
    cmp = _compare()
    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    assert cmp.scan_trials_wanted('auto', cuda, 'selective_scan:triton')
    assert not cmp.scan_trials_wanted('auto', cuda, 'selective_scan:mamba_ssm')
    assert not cmp.scan_trials_wanted('auto', cpu, 'selective_scan:triton')
    assert cmp.scan_trials_wanted('on', cuda, 'selective_scan:mamba_ssm')
    assert not cmp.scan_trials_wanted('off', cuda, 'selective_scan:triton')


def test_scan_backends_from_the_selective_scan_module_else_the_extension(monkeypatch):
    """The backends come from gka_vision.ops.selective_scan.available_backends; without that function,
    mamba_ssm's counts on CUDA when the extension selective_scan_cuda can be found."""
    import importlib.util
    from gka_vision.ops import selective_scan as ss
    cmp = _compare()
    monkeypatch.setattr(ss, 'available_backends', lambda device: ['torch', 'mamba_ssm'] if device.type == 'cuda'
                        else ['torch'])
    assert cmp.scan_backends(torch.device('cuda')) == ['torch', 'mamba_ssm']
    assert cmp.scan_backends(torch.device('cpu')) == ['torch']
    monkeypatch.delattr(ss, 'available_backends')
    found = {'selective_scan_cuda': None}
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: found.get(name, object()))
    assert cmp.scan_backends(torch.device('cuda')) == ['reference', 'torch', 'triton']
    found['selective_scan_cuda'] = object()
    assert cmp.scan_backends(torch.device('cuda')) == ['reference', 'torch', 'triton', 'mamba_ssm']
    assert cmp.scan_backends(torch.device('cpu')) == ['reference', 'torch']


def test_params_are_counted_at_the_table_resolution(tmp_path, monkeypatch):
    """The first point of a model may build it at 1024 px (memory target); its position embedding is larger
    there, so the parameter count must come from the build at --res."""
    cmp = _compare()

    def build(name, res, backend, device, extra=None):
        net = _Net('ok', backend)
        net.pos = nn.Parameter(torch.zeros(res * res))  # grows with the resolution, like a position embedding
        return net.to(device)

    monkeypatch.setattr(cmp, 'build_model', build)
    monkeypatch.setattr(cmp, 'plan', lambda args: [('sweep', 'ok', 32, 'train'), ('bs', 'ok', 2, 'train')])
    result = cmp.main(_ARGS + ['--models', 'ok', '--out', str(tmp_path)])
    n_body = sum(p.numel() for p in _Net('ok').parameters())
    assert result['rows'][0]['params_m'] == pytest.approx((n_body + 16 * 16) / 1e6)


def test_model_variant_rows(tmp_path, monkeypatch):
    """NAME@VARIANT is NAME built with the variant's kwargs (recompute_mixer=True for @recompute), as a row
    of its own; the memory targets list it next to the plain model; an unknown variant is an error naming it."""
    cmp = _compare()
    built = []

    def fake_create(name, **kw):
        built.append((name, kw))
        return _Net('ok')
    monkeypatch.setattr(cmp.timm, 'create_model', fake_create)
    assert cmp.timm_name('gka_tiny_patch16_224@recompute') == 'gka_tiny_patch16_224'
    cmp.build_model('gka_tiny_patch16_224@recompute', 32, None, torch.device('cpu'))
    assert built[-1] == ('gka_tiny_patch16_224', dict(recompute_mixer=True, img_size=32))
    with pytest.raises(ValueError, match="unknown model variant 'fast'"):
        cmp.build_model('gka_tiny_patch16_224@fast', 32, None, torch.device('cpu'))
    names = ('gka_tiny_patch16_224', 'gka_tiny_patch16_224@recompute', 'gka_tiny_patch16_224@compile',
             'deit_tiny_patch16_224')
    result = dict(args=dict(resolutions=[16, 32], batch_sizes=[2], sweep_batch=2, res=16, memory_res=16),
                  rows=[dict(name=n, model=n, train={}, infer={}) for n in names],
                  sweep=[dict(name=n, res=16, train=dict(status='ok', peak_gb=g, img_s=1.0))
                         for n, g in (('gka_tiny_patch16_224', 3.0), ('gka_tiny_patch16_224@recompute', 1.0),
                                      ('deit_tiny_patch16_224', 2.0))])
    lines = [line for line in cmp.target_lines(result) if line.startswith('| training peak GB')]
    assert lines[0].endswith('| gka_tiny_patch16_224: 3.00 | deit_tiny_patch16_224: 2.00 | 1.500 | <= 1 '
                             '| **NOT met** |')
    assert lines[2].endswith('| gka_tiny_patch16_224@recompute: 1.00 | deit_tiny_patch16_224: 2.00 | 0.500 | <= 1 '
                             '| **met** |')
    assert len(lines) == 3 and '@compile' not in ''.join(lines)  # compiled rows run no sweep
    tasks = cmp.plan(cmp.parse_args(['--models', *names, '--resolutions', '16', '32', '--memory-res', '16']))
    assert tasks[:6] == [('sweep', m, r, 'train') for m, r in (
        ('gka_tiny_patch16_224', 32), ('deit_tiny_patch16_224', 32), ('gka_tiny_patch16_224', 16),
        ('deit_tiny_patch16_224', 16), ('gka_tiny_patch16_224@recompute', 16))] + [
        ('bs', 'gka_tiny_patch16_224@compile', 128, 'train')]


def test_compile_variant_and_combined_variants(monkeypatch):
    """NAME@V1+V2 applies both variants; @compile wraps the built model in torch.compile (the same model, so a
    compiled row is comparable with the eager one)."""
    cmp = _compare()
    built, compiled = [], []

    def fake_create(name, **kw):
        built.append((name, kw))
        return _Net('ok')
    monkeypatch.setattr(cmp.timm, 'create_model', fake_create)
    monkeypatch.setattr(cmp.torch, 'compile', lambda m: compiled.append(m) or ('compiled', m))
    out = cmp.build_model('gkavision_tiny@hd40+compile', 32, None, torch.device('cpu'))
    assert built[-1] == ('gkavision_tiny', dict(gka_head_dim=40, img_size=32))
    assert out == ('compiled', compiled[-1]) and isinstance(compiled[-1], _Net)
    assert cmp.variants('deit_tiny_patch16_224@compile') == ['compile']
    assert not isinstance(cmp.build_model('deit_tiny_patch16_224', 32, None, torch.device('cpu')), tuple)
    with pytest.raises(ValueError, match="unknown model variant 'fast'"):
        cmp.variants('gka_tiny_patch16_224@compile+fast')


def test_cudagraphs_variant_compiles_in_reduce_overhead_mode_and_marks_each_step(monkeypatch):
    """NAME@cudagraphs is torch.compile(model, mode='reduce-overhead'), a compiled row (its eager row is NAME) whose
    training and inference steps each start a new CUDA-graph iteration; other rows never mark one."""
    cmp = _compare()
    calls, marks = [], []
    monkeypatch.setattr(cmp.timm, 'create_model', lambda name, **kw: _Net('ok'))
    monkeypatch.setattr(cmp.torch, 'compile', lambda m, **kw: calls.append(kw) or m)
    cmp.build_model('gkavision_tiny@hd40+cudagraphs', 32, None, torch.device('cpu'))
    cmp.build_model('gkavision_tiny@compile', 32, None, torch.device('cpu'))
    assert calls == [dict(mode='reduce-overhead'), {}]
    assert cmp.compiled('gkavision_tiny@cudagraphs') and cmp.cudagraphs('gkavision_tiny@hd40+cudagraphs')
    assert not cmp.cudagraphs('gkavision_tiny@compile')
    assert cmp.eager_name('gkavision_tiny@hd40+cudagraphs') == 'gkavision_tiny@hd40'
    monkeypatch.setattr(cmp.torch.compiler, 'cudagraph_mark_step_begin', lambda: marks.append(1))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    model.num_classes = 4
    for mode in ('train', 'infer'):
        for graphs in (False, True):
            marks.clear()
            r = cmp.measure(model, 2, 8, mode, torch.float32, torch.device('cpu'), warmup=2, iters=3, graphs=graphs)
            assert r['status'] == 'ok' and r['iters'] == 3, r
            assert len(marks) == (2 + 3 if graphs else 0)


def test_compiled_sweep_runs_compiled_rows_at_every_resolution(tmp_path, monkeypatch):
    """--compiled-sweep: a compiled row also runs the training points of the sweep, after the eager targets, each
    (row, resolution) built after torch.compiler.reset() (a static-shape compilation of its own); the compiled
    2048 px target and the compiled memory pair are ratios of compiled rows."""
    cmp = _compare()
    names = ['gka_tiny_patch16_224', 'deit_tiny_patch16_224', 'gka_tiny_patch16_224@compile',
             'deit_tiny_patch16_224@compile']
    base = ['--models', *names, '--batch-sizes', '128', '--resolutions', '224', '1024', '2048', '--no-flops']
    without = cmp.plan(cmp.parse_args(base))
    assert not [t for t in without if t[0] == 'sweep' and '@' in t[1]]
    tasks = cmp.plan(cmp.parse_args(base + ['--compiled-sweep']))
    eager_targets = [('sweep', m, r, 'train') for r in (2048, 1024) for m in names[:2]]
    assert tasks[:4] == eager_targets
    assert tasks[4:8] == [('bs', m, 128, 'train') for m in names[2:]] + [
        ('sweep', m, 2048, 'train') for m in names[2:]]
    assert tasks[8:10] == [('sweep', m, 1024, 'train') for m in names[2:]]
    compiled_sweep = [t for t in tasks if t[0] == 'sweep' and '@' in t[1]]
    assert sorted(compiled_sweep) == sorted(('sweep', m, r, 'train') for m in names[2:] for r in (224, 1024, 2048))
    assert cmp.memory_pairs(names, True)[2:] == [('gka_tiny_patch16_224@compile', 'deit_tiny_patch16_224@compile')]
    assert cmp.compiled_like('deit_tiny_patch16_224', 'gka_tiny_patch16_224@hd40+cudagraphs') == \
        'deit_tiny_patch16_224@cudagraphs'

    events = []
    monkeypatch.setattr(cmp.torch.compiler, 'reset', lambda: events.append('reset'))
    monkeypatch.setattr(cmp, 'build_model', lambda name, res, *a, **k: events.append((name, res))
                        or _fake_build(name, res, *a, **k))
    args = _ARGS + ['--models', 'ok', 'ok@compile', '--out', str(tmp_path), '--compiled-sweep']
    result = cmp.main(args)
    sweep = {(s['name'], s['res']): s for s in result['sweep']}
    assert sweep[('ok@compile', 32)]['train']['status'] == 'ok' and 'infer' not in sweep[('ok@compile', 32)]
    assert sweep[('ok', 32)]['infer']['status'] == 'ok'
    for i, e in enumerate(events):  # every compiled build right after a reset, eager builds without one
        if isinstance(e, tuple):
            assert (events[i - 1] == 'reset') == ('@compile' in e[0]), events
    assert ('ok@compile', 16) in events and ('ok@compile', 32) in events
    assert 'of the sweep only its training points, each resolution compiled afresh' in (tmp_path / 'compare.md').read_text()
    ok = lambda v, k='img_s': dict(status='ok', **{k: v})  # noqa: E731
    res = dict(args=dict(vars(cmp.parse_args(base + ['--compiled-sweep']))), rows=[], sweep=[
        dict(name=n, model=n, res=r, train=ok(v, k)) for n, r, v, k in (
            ('gka_tiny_patch16_224@compile', 2048, 40.0, 'img_s'), ('deit_tiny_patch16_224@compile', 2048, 38.0, 'img_s'),
            ('gka_tiny_patch16_224@compile', 1024, 6.0, 'peak_gb'), ('deit_tiny_patch16_224@compile', 1024, 5.0, 'peak_gb'))])
    res['rows'] = [dict(name=n, model=n, train={}, infer={}) for n in names]
    lines = [line for line in cmp.target_lines(res) if 'compile' in line and line.startswith('| training')]
    assert '| training img/s, 2048px, batch 16 | gka_tiny_patch16_224@compile: 40 (-) | deit_tiny_patch16_224@compile: ' \
           '38 (-) | 1.053 | >= 1.0 | **met** |' in lines
    assert '| training peak GB, 1024px, batch 16 | gka_tiny_patch16_224@compile: 6.00 | deit_tiny_patch16_224@compile: ' \
           '5.00 | 1.200 | <= 1 | **NOT met** |' in lines


def test_cudagraphs_rows_always_warm_up_through_the_recording(monkeypatch):
    """With CUDA graphs the first step runs the model eagerly and the second records the graphs (run C5 of
    docs/benchmarks.md timed a recording step as the point when the time budget had cut the warm-up to one step):
    the warm-up of a graphs row runs two steps even past the deadline or --point-time-s, and the timed step after it
    is a replay; an eager row's warm-up stops after its first step there."""
    cmp = _compare()
    marks = []
    monkeypatch.setattr(cmp.torch.compiler, 'cudagraph_mark_step_begin', lambda: marks.append(1))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    model.num_classes = 4
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    for graphs, warmup, want_calls in ((True, 2, 3), (True, 1, 3), (False, 2, 2), (True, 4, 3)):
        calls.clear(), marks.clear()
        r = cmp.measure(model, 2, 8, 'train', torch.float32, torch.device('cpu'), warmup=warmup, iters=5,
                        point_time_s=0.0, deadline=time.monotonic() - 1.0, graphs=graphs)
        assert r['status'] == 'ok' and r['iters'] == 1, r
        assert len(calls) == want_calls, (graphs, warmup, len(calls))
        assert len(marks) == (want_calls if graphs else 0)

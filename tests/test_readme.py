"""The README's quick start, executed line for line: the python block under '## Quick start', with the one
substitution the README names (`run`: the weights folder of a train.py run; here a one-epoch run of its own)."""
import logging
import re
from pathlib import Path

import pytest
import torch

from fashion_mnist import tiny_cfg  # tests/fashion_mnist.py

README = Path(__file__).resolve().parent.parent / "README.md"
RUN_LINE = 'run = "output/bundled/weights"'


def quick_start_block() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python block under '## Quick start'"
    return m.group(1)


@pytest.mark.timeout(600)
def test_readme_quick_start_runs(tiny_data, tmp_path, caplog):
    from gka_vision.engine.trainer import run
    run(tiny_cfg(tiny_data, tmp_path / "run", "sched.epochs=1"))
    weights = tmp_path / "run" / "weights"
    code = quick_start_block()
    assert code.count(RUN_LINE) == 1, f"the README's block must define {RUN_LINE!r} once"
    code = code.replace(RUN_LINE, f"run = {str(weights)!r}")
    ns = {}
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        exec(compile(code, str(README) + ":quick-start", "exec"), ns)
    assert ns["logits"].shape == (1, 100)
    assert [tuple(m.shape) for m in ns["maps"]] == [(1, 192, 14, 14)] * 3
    assert ns["probs"].shape == (1, 10)
    assert ns["o"].shape == (2, 64, 4, 32) and torch.isfinite(ns["o"]).all()
    # the trained model, loaded both ways, is the model train.py exported
    from safetensors.torch import load_file
    saved = load_file(str(weights / "model.safetensors"))
    for model in (ns["model"],):
        for k, v in saved.items():
            assert torch.equal(model.state_dict()[k], v), k
    ft = ns["ft"]
    assert ft.in_chans == 3 and ft.head.weight.shape[0] == 100 and ft.pos_embed.shape[1:3] == (8, 8)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("classifier head reset" in m for m in said)
    assert any("pos_embed resized" in m for m in said)
    assert any("adapted from 1 to 3 input channels" in m for m in said)
    # the file's own description (pretrained_cfg.json) leaves timm nothing to warn about
    assert not any("already match" in m or "timm drops" in m for m in said), said

"""The ImageNet training transforms that the loader builds run on the installed Pillow: timm's
RandAugment asks Pillow to posterize to 0 bits at full magnitude (rand-m9-mstd0.5 reaches it), which
Pillow >= 13 refuses with a ValueError that would end a training run."""
import numpy as np
import pytest
from PIL import Image

from gka_vision.data.loader import build_transform
from gka_vision.engine.config import load_config


def test_posterize_to_zero_bits_gives_a_black_image():
    from timm.data.auto_augment import AugmentOp
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8))
    out = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)(img)  # 4 - 4 = 0 bits kept
    assert out.size == img.size and not np.asarray(out).any()
    kept = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=5)(img)  # 2 bits: the 2 high bits survive
    assert np.array_equal(np.asarray(kept), np.asarray(img) & 0xC0)


@pytest.mark.parametrize("config", ["configs/imagenet/gkavision_tiny.yaml", "configs/imagenet/deit_tiny.yaml"])
def test_imagenet_training_transform_runs_on_many_images(config):
    import random
    import torch
    cfg = load_config(config, ["data.root=bundled", "data.img_size=64"])
    t = build_transform(cfg.data, cfg.aug, train=True)
    rng = np.random.default_rng(1)
    random.seed(0)
    torch.manual_seed(0)
    for _ in range(400):  # ~0.3 % of images draw a 0-bit posterize: this sees some
        img = Image.fromarray(rng.integers(0, 255, (75, 100, 3), dtype=np.uint8))
        assert t(img).shape == (3, 64, 64)

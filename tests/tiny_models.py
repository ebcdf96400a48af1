"""One tiny configuration per model family (CPU-sized, torch backend), for the tests that run every family
through torch.compile and the export paths."""
import timm
import torch

import gka_vision  # noqa: F401  (registers the models)

# tiny configs of each family (module name -> create_model kwargs, input side)
FAMILIES = {
    'gka_vit': (dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_iter=3), 32),
    'mamba_vim': (dict(img_size=32, patch_size=8, embed_dim=32, depth=2, d_state=4), 32),
    'gkavision': (dict(dim=16, in_dim=8, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2), window_size=(8, 8, 4, 2),
                       num_iter=3), 64),
    'mambavision': (dict(dim=16, in_dim=8, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2), window_size=(8, 8, 4, 2),
                         d_state=4), 64),
}
REPRESENTATIVE = {'gka_vit': 'gka_tiny_patch16_224', 'mamba_vim': 'mamba_vim_tiny_patch16_224',
                  'gkavision': 'gkavision_tiny', 'mambavision': 'mambavision_tiny'}


def tiny_model(family, name, seed=0):
    kwargs, side = FAMILIES[family]
    torch.manual_seed(seed)
    model = timm.create_model(name, num_classes=5, drop_rate=0., drop_path_rate=0., backend='torch', **kwargs)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(seed + 1))
    return model.train(), x

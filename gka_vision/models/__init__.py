# Each import registers one model family with timm.
from . import gka_vit  # noqa: F401  (isotropic backbone; GKA: gka_{tiny,small,base}_patch16_224)
from . import mamba_vim  # noqa: F401  (its Vim-style Mamba baselines: mamba_vim_{tiny,small,base}_patch16_224)
from . import gkavision  # noqa: F401  (hybrid backbone; GKAVision: gkavision_{tiny,small,base})
from . import mambavision  # noqa: F401  (its MambaVision baseline: mambavision_tiny)

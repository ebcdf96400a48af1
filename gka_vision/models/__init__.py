# Each import registers one model family with timm.
from . import gka_vit  # noqa: F401  (isotropic GKA: gka_{tiny,small,base}_patch16_224)
from . import mamba_vim  # noqa: F401  (Vim-style Mamba baselines: mamba_vim_{tiny,small,base}_patch16_224)
from . import mambavision  # noqa: F401  (MambaVision hybrid: mambavision_tiny)
from . import gkavision  # noqa: F401  (GKAVision hybrid: gkavision_{tiny,small,base})

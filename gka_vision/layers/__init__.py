from .gka_mixer import BidirectionalGKAMixer
from .norm import GatedRMSNorm
from .patch_embed import PatchEmbed, resample_pos_embed

from .gka_mixer import BidirectionalGKAMixer
from .gka_vision_mixer import GKAVisionMixer
from .norm import GatedRMSNorm
from .patch_embed import PatchEmbed, resample_pos_embed

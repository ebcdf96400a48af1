from .attention import AttentionMixer
from .blocks import MixerBlock, VimBlock, set_block_recompute, set_block_selective_recompute
from .create_mixer import MIXERS, create_mixer, get_mixer, mixer_options, pop_mixer_options
from .gka_mixer import BidirectionalGKAMixer
from .gka_vision_mixer import GKAVisionMixer
from .mamba_mixer import BidirectionalMambaMixer, MambaVisionMixer
from .norm import AutocastLayerNorm, GatedRMSNorm
from .patch_embed import PatchEmbed, resample_pos_embed

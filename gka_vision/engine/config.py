"""The training configuration: omegaconf structured config (dataclasses), YAML files, dotlist overrides.

    cfg = load_config("configs/imagenet/gka_small.yaml", ["data.root=/data/in1k", "optim.lr=1e-3"])

Merge order: dataclass defaults < YAML file < command-line dotlist. Keys the schema does not define
are errors (the message names the key and suggests the closest one); ``model.kwargs`` is free-form
because it is passed to ``timm.create_model``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ..data.folder import DataFolder, DataFolderError

BUNDLED_ROOT = str(Path(__file__).resolve().parent.parent / "data" / "bundled")
BUNDLED = "bundled"  # data.root value that names the Fashion-MNIST sample shipped with the package
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes of COMPILE_MODES that record CUDA graphs


@dataclass
class ModelConfig:
    name: str = "gka_tiny_patch16_224"
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    pretrained: Optional[str] = None  # weights file (.safetensors / .pth) loaded through timm's pretrained path
    drop_path: float = 0.0
    drop_rate: float = 0.0
    grad_checkpointing: bool = False
    compile: bool = False  # torch.compile the model
    # torch.compile's mode: default | reduce-overhead (CUDA graphs: no per-kernel launch cost on the host) |
    # max-autotune (also CUDA graphs) | max-autotune-no-cudagraphs
    compile_mode: str = "default"


@dataclass
class DataConfig:
    root: Optional[str] = BUNDLED  # shard folder with _info.json, or "bundled"
    train_split: str = "train"  # split name in _info.json, or a shard pattern "x-{000..009}.tar|N"
    val_split: Optional[str] = None  # None: the first of val, validation, test in _info.json (as eval.py picks)
    num_classes: Optional[int] = None  # None: read from _info.json
    img_size: int = 224
    in_chans: int = 3  # 1: decode as grayscale ("L"), 3: RGB
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    batch_size: int = 128  # per process and per micro-step
    val_batch_size: Optional[int] = None  # None: 2 x batch_size
    num_workers: int = 4
    shuffle_buffer: int = 5000  # encoded samples per DataLoader worker
    resample: bool = False  # draw training shards with replacement (default: every sample once per epoch)
    pin_memory: bool = True


@dataclass
class AugConfig:
    scale: List[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    ratio: List[float] = field(default_factory=lambda: [0.75, 1.3333333])
    hflip: float = 0.5
    color_jitter: Optional[float] = None
    auto_augment: Optional[str] = None  # e.g. "rand-m9-mstd0.5-inc1"
    re_prob: float = 0.0  # random erasing
    re_mode: str = "pixel"
    re_count: int = 1
    mixup: float = 0.0  # mixup alpha (0 = off)
    cutmix: float = 0.0  # cutmix alpha (0 = off)
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.0  # label smoothing


@dataclass
class OptimConfig:
    opt: str = "adamw"
    lr: float = 5e-4
    lr_base_size: Optional[int] = None  # if set: lr is for this global batch and scales linearly
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    layer_decay: Optional[float] = None  # layer-wise lr decay (fine-tuning), e.g. 0.75
    clip_grad: Optional[float] = None  # max grad norm
    accum_steps: int = 1  # gradient accumulation (micro-steps per update)


@dataclass
class SchedConfig:
    epochs: int = 300
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.9998
    warmup: bool = False


@dataclass
class CheckpointConfig:
    resume: Optional[str] = None  # a checkpoint path, or "auto" = <output>/last.pth if it exists
    save_every: int = 1  # epochs between "last" checkpoints
    export: bool = True  # write safetensors + config.json for timm at the end


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    output: str = "output/run"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | none
    threads: Optional[int] = None  # torch.set_num_threads on CPU
    log_interval: int = 20  # steps between progress-bar/TensorBoard updates
    eval_every: int = 1  # epochs
    progress: bool = True  # tqdm bar per epoch
    stop_after_epoch: Optional[int] = None  # end this run after epoch N (0-based, >= 0); the schedule spans sched.epochs
    time_limit_min: Optional[float] = None  # stop after the epoch that would overrun this wall-clock budget (resumable)
    verify_export: bool = False  # reload the exported weights through timm and re-evaluate


class UserError(Exception):
    """Bad input from the user (config, files, arguments): train.py and eval.py print the message as one
    line and exit with code 2."""


class ConfigError(UserError, ValueError):
    """A configuration problem, with a message that names the key or path."""


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults < YAML ``path`` < ``overrides`` (``key=value`` strings); returns a TrainConfig."""
    schema = OmegaConf.structured(TrainConfig)
    layers = [schema]
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} does not exist")
        layers.append(_checked(lambda: OmegaConf.load(path), f"config file {path}"))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    if overrides:
        layers.append(_checked(lambda: OmegaConf.from_dotlist(list(overrides)), "command line"))
    cfg = _checked(lambda: OmegaConf.merge(*layers), f"{path or 'defaults'} + command line")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required config values: {missing}")
    obj = _checked(lambda: OmegaConf.to_object(cfg), "config")
    validate(obj)
    return obj


def _checked(fn, where: str):
    try:
        return fn()
    except ConfigKeyError as e:
        raise ConfigError(f"unknown config key in {where}: {e.msg if hasattr(e, 'msg') else e}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config in {where}: {e}") from None


def uses_cudagraphs(model: ModelConfig) -> bool:
    """The model trains under CUDA graphs: compiled in one of CUDAGRAPH_MODES."""
    return model.compile and model.compile_mode in CUDAGRAPH_MODES


def validate(cfg: TrainConfig) -> None:
    """Checks that need values, not just types."""
    def need(cond, msg):
        if not cond:
            raise ConfigError(msg)

    def at_least(key, value, low, strict=False, optional=False):
        if value is None and optional:
            return
        ok = value is not None and (value > low if strict else value >= low)  # NaN fails both
        need(ok, f"{key} must be {'>' if strict else '>='} {low}, got {value}")

    def fraction(key, value, high_open=False):
        need(0 <= value < 1 if high_open else 0 <= value <= 1,
             f"{key} must be in [0, 1{')' if high_open else ']'}, got {value}")

    d, o, s, a = cfg.data, cfg.optim, cfg.sched, cfg.aug
    need(d.in_chans in (1, 3), f"data.in_chans must be 1 or 3, got {d.in_chans}")
    need(len(d.mean) == d.in_chans and len(d.std) == d.in_chans,
         f"data.mean/std need {d.in_chans} values (data.in_chans), got {d.mean} / {d.std}")
    at_least("data.batch_size", d.batch_size, 1)
    at_least("data.val_batch_size", d.val_batch_size, 1, optional=True)
    at_least("data.num_workers", d.num_workers, 0)
    at_least("data.shuffle_buffer", d.shuffle_buffer, 0)
    at_least("data.img_size", d.img_size, 1)
    at_least("data.num_classes", d.num_classes, 1, optional=True)
    need(0 < d.crop_pct <= 1, f"data.crop_pct must be in (0, 1], got {d.crop_pct}")
    at_least("optim.accum_steps", o.accum_steps, 1)
    at_least("optim.lr", o.lr, 0, strict=True)
    at_least("optim.lr_base_size", o.lr_base_size, 1, optional=True)
    at_least("optim.weight_decay", o.weight_decay, 0)
    at_least("optim.eps", o.eps, 0, strict=True)
    at_least("optim.clip_grad", o.clip_grad, 0, strict=True, optional=True)
    at_least("optim.layer_decay", o.layer_decay, 0, strict=True, optional=True)
    at_least("sched.epochs", s.epochs, 1)
    at_least("sched.warmup_epochs", s.warmup_epochs, 0)
    at_least("sched.warmup_lr", s.warmup_lr, 0)
    at_least("sched.min_lr", s.min_lr, 0)
    for key in ("hflip", "re_prob", "mixup_prob", "mixup_switch_prob"):
        fraction(f"aug.{key}", getattr(a, key))
    fraction("aug.smoothing", a.smoothing, high_open=True)
    at_least("aug.mixup", a.mixup, 0)
    at_least("aug.cutmix", a.cutmix, 0)
    fraction("model.drop_path", cfg.model.drop_path, high_open=True)
    fraction("model.drop_rate", cfg.model.drop_rate, high_open=True)
    at_least("eval_every", cfg.eval_every, 1)
    at_least("log_interval", cfg.log_interval, 1)
    at_least("checkpoint.save_every", cfg.checkpoint.save_every, 1)
    at_least("stop_after_epoch", cfg.stop_after_epoch, 0, optional=True)
    at_least("time_limit_min", cfg.time_limit_min, 0, strict=True, optional=True)
    at_least("threads", cfg.threads, 1, optional=True)
    need(cfg.amp in ("auto", "bf16", "fp16", "none"), f"amp must be auto|bf16|fp16|none, got {cfg.amp!r}")
    need(cfg.device in ("auto", "cpu", "cuda"), f"device must be auto|cpu|cuda, got {cfg.device!r}")
    need(cfg.model.compile_mode in COMPILE_MODES,
         f"model.compile_mode must be {'|'.join(COMPILE_MODES)}, got {cfg.model.compile_mode!r}")
    need(cfg.model.compile or cfg.model.compile_mode == "default",
         f"model.compile_mode={cfg.model.compile_mode} needs model.compile=true")
    need((a.mixup == 0 and a.cutmix == 0) or d.batch_size % 2 == 0,
         "mixup/cutmix need an even data.batch_size")
    need(len(a.scale) == 2 and len(a.ratio) == 2, "aug.scale and aug.ratio need two values")
    import timm
    import gka_vision  # noqa: F401  (registers the project's families)
    need(timm.is_model(cfg.model.name), f"model.name {cfg.model.name!r} is not a registered timm model "
         f"(this project's: {timm.list_models(['gka*', 'mamba*'])})")
    resolve_data_root(d.root)


def check_splits(data: DataConfig, root: str) -> tuple[int, str]:
    """The data folder holds what the config names (``DataFolder``): the training split in its
    ``_info.json`` or a shard pattern, the validation split also as a sub-folder of an ImageFolder tree,
    and a class count. Returns (number of classes, validation split)."""
    try:
        folder = DataFolder.open(root)
        folder.train_split(data.train_split, "data.train_split")
        val_split = folder.eval_split(data.val_split, "data.val_split")
    except DataFolderError as e:
        raise ConfigError(str(e)) from None
    num_classes = data.num_classes if data.num_classes is not None else folder.num_classes
    if num_classes is None:
        raise ConfigError(f"{folder.info_path if folder.info is not None else 'data.root'} gives no num_classes; "
                          f"set data.num_classes")
    return num_classes, val_split


def resolve_data_root(root: Optional[str]) -> str:
    if root is None or root == "":
        raise ConfigError("data.root is not set: give the shard folder, e.g. data.root=/data/imagenet-wds")
    path = BUNDLED_ROOT if root == BUNDLED else os.path.expanduser(root)
    if not os.path.isdir(path):
        raise ConfigError(f"data.root {root!r} does not exist or is not a folder" +
                          (" (the bundled sample is missing from this install)" if root == BUNDLED else ""))
    return path


def to_dict(cfg: TrainConfig) -> dict:
    """Plain containers only (safe for torch.load(weights_only=True) and for YAML)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def to_yaml(cfg: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))

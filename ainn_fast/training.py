"""Training: random crops of image folders, the RD loss, checkpoints that resume exactly.

Determinism is stateless: the crops of step s on rank r and the quantization noise of
that step come from generators seeded by (seed, s, r), so a resumed run, or a DDP run
compared with its single-process equivalent, sees exactly the same data and noise
without saving any RNG state.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import zoo
from .backend import require_backend, use_backend
from .checkpoint import is_derived, load_model, restore_bounds, save_model, with_cfrm_layers, with_context
from .errors import CheckpointError, InputError
from .hardware import slow_low_precision
from .image_io import read_rgb
from .losses import RateDistortionLoss, lambda_for
from .models import QUANTIZATIONS, STRIDE
from .train_graphs import GraphedStep

# TrainConfig fields that define the model a run trains; the others may change on a resume.
MODEL_FIELDS = ("config", "quality", "metric", "context", "cfrm_layers")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".ppm"}


@dataclass
class TrainConfig:
    train_dirs: list[str]
    out_dir: str
    val_dirs: list[str] = field(default_factory=list)
    config: str = "lite"
    quality: int = 3
    metric: str = "mse"
    patch_size: int = 256
    batch_size: int = 8  # per process
    steps: int = 100_000
    lr: float = 1e-4
    aux_lr: float = 1e-3
    optimizer: str = "adam"  # or "sgd" (momentum 0.9)
    clip: float = 1.0
    milestones: list[int] = field(default_factory=list)  # steps where lr *= 0.1
    amp: str = "none"  # "none" or "bf16"
    channels_last: bool = True  # faster on every machine measured (README, Train)
    backend: str = "auto"
    val_every: int = 1000
    ckpt_every: int = 1000
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    init_checkpoint: str | None = None  # start from these weights (fine-tuning)
    context: str = "serial"  # or "checkerboard" (from a serial --init: its weights carried over)
    cfrm_layers: int | None = None  # dense layers of the CFRMs (None: the config's; an --init's grow to it)
    quantization: str = "noise"  # or "mixed": noise for the rate, rounding straight through (AINN.forward)
    context_passes: int = 1  # mixed only: passes of the context model, each fed the last pass's y_hat
    cuda_graphs: bool = False  # replay each step from one CUDA graph (train_graphs.py); one CUDA process


def list_images(dirs: list[str]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise InputError(f"{d}: no such folder")
        files += sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no images in {', '.join(dirs)}")
    return files


def _load_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1)  # uint8 (3, H, W)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


class CropBatches:
    """Batches of random crops with flips; batch (step, rank) is a pure function of the seed.

    Images are decoded once and kept in memory as uint8 (training sets of photos of a few
    hundred megapixels fit; point the trainer at several folders for more).
    """

    def __init__(self, files: list[Path], patch: int) -> None:
        self.images = [_load_rgb(f) for f in files]
        self.patch = patch

    def batch(self, seed: int, step: int, rank: int, size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(step_seed(seed, step, rank))
        out = []
        for _ in range(size):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
            _, h, w = img.shape
            if h < self.patch or w < self.patch:  # small image: replicate its edges
                img = F.pad(img[None].float(), (0, max(0, self.patch - w), 0, max(0, self.patch - h)), mode="replicate")[0]
                _, h, w = img.shape
            top = int(torch.randint(h - self.patch + 1, (1,), generator=g))
            left = int(torch.randint(w - self.patch + 1, (1,), generator=g))
            crop = img[:, top : top + self.patch, left : left + self.patch]
            if torch.rand((), generator=g) < 0.5:
                crop = crop.flip(2)
            if torch.rand((), generator=g) < 0.5:
                crop = crop.flip(1)
            out.append(crop.float() / 255)
        return torch.stack(out)


def split_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """Network parameters and the entropy bottleneck's quantiles (their own optimizer)."""
    net = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return net, aux


def psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10 * math.log10(1.0 / mse)


def _check_numbers(cfg: TrainConfig) -> None:
    """Refuse settings no run can use, before any work, in one line each."""
    checks = [
        (cfg.patch_size >= STRIDE and cfg.patch_size % STRIDE == 0, f"--patch-size {cfg.patch_size}: use a multiple of {STRIDE}"),
        (cfg.batch_size >= 1, f"--batch-size {cfg.batch_size}: use 1 or more"),
        (cfg.steps >= 0, f"--steps {cfg.steps}: use 0 or more"),
        (cfg.lr > 0 and cfg.aux_lr > 0, f"learning rates must be positive (--lr {cfg.lr}, --aux-lr {cfg.aux_lr})"),
        (cfg.clip >= 0, f"--clip {cfg.clip}: use 0 (off) or a positive norm"),
        (cfg.val_every >= 1 and cfg.ckpt_every >= 1, f"--val-every {cfg.val_every} and --ckpt-every {cfg.ckpt_every}: use 1 or more"),
        (all(m >= 1 for m in cfg.milestones), f"--milestones {' '.join(map(str, cfg.milestones))}: steps of 1 or more"),
        (cfg.cfrm_layers is None or cfg.cfrm_layers >= 0, f"--cfrm-layers {cfg.cfrm_layers}: use 0 or more"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def uncapturable(cfg: TrainConfig) -> str | None:
    """Why this run's step cannot be captured as a CUDA graph, or None."""
    if cfg.metric == "ms-ssim":
        # pytorch_msssim copies its Gaussian window and scale weights from host memory in
        # every call, which a capture cannot hold.
        return "MS-SSIM steps cannot be captured (pytorch_msssim copies data from the host in every call)"
    return None


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        _check_numbers(cfg)
        self.cfg = cfg
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.device = torch.device(cfg.device)
        require_backend(cfg.backend, self.device.type)  # before loading anything, not at the first op
        if cfg.cuda_graphs and (self.device.type != "cuda" or self.world > 1):
            raise InputError("--cuda-graphs needs --device cuda and a single process (no torchrun)")
        # Only rank 0 speaks, so only it times the probe convolution.
        slow = slow_low_precision(torch.bfloat16, self.device) if cfg.amp == "bf16" and self.rank == 0 else None
        if slow:
            warnings.warn(f"amp bf16: {slow}", RuntimeWarning, stacklevel=2)
        self.out = Path(cfg.out_dir)
        self.data = CropBatches(list_images(cfg.train_dirs), cfg.patch_size)
        self.val_files = list_images(cfg.val_dirs) if cfg.val_dirs else []
        if cfg.init_checkpoint:
            self.model = restore_bounds(load_model(cfg.init_checkpoint))
            if self.model.config.name != cfg.config:  # the run would train, and log, another model
                raise InputError(
                    f"--init {cfg.init_checkpoint} holds a {self.model.config.name} model; pass --config "
                    f"{self.model.config.name} to fine-tune it"
                )
            if self.model.config.context != cfg.context:
                self.model = with_context(self.model, cfg.context)
            have = len(self.model.cfrm[0].layers)
            if cfg.cfrm_layers is not None and cfg.cfrm_layers != have:
                if cfg.cfrm_layers < have:  # with_cfrm_layers refuses too, but not as a user's error
                    raise InputError(
                        f"--init {cfg.init_checkpoint} has {have} CFRM layers; "
                        f"--cfrm-layers can grow them, not remove any (got {cfg.cfrm_layers})"
                    )
                self.model = with_cfrm_layers(self.model, cfg.cfrm_layers)
            self.model.quality, self.model.metric = cfg.quality, cfg.metric
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                sizes = {} if cfg.cfrm_layers is None else {"cfrm_layers": cfg.cfrm_layers}
                self.model = zoo.ainn(cfg.quality, cfg.metric, cfg.config, context=cfg.context, **sizes)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.criterion = RateDistortionLoss(lambda_for(cfg.quality, cfg.metric), cfg.metric)
        net, aux = split_parameters(self.model)
        # A captured Adam step keeps its step counts on the device (train_graphs.py).
        capturable = {"capturable": True} if cfg.cuda_graphs else {}
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(net, lr=cfg.lr, **capturable)
        elif cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(net, lr=cfg.lr, momentum=0.9)
        else:
            raise InputError(f"unknown optimizer {cfg.optimizer!r}; use adam or sgd")
        if cfg.quantization not in QUANTIZATIONS:
            raise InputError(f"unknown quantization {cfg.quantization!r}; use noise or mixed")
        if cfg.context_passes < 1 or (cfg.context_passes > 1 and cfg.quantization != "mixed"):
            raise InputError(f"--context-passes {cfg.context_passes}: use 1, or more with --quantization mixed")
        self.aux_optimizer = torch.optim.Adam(aux, lr=cfg.aux_lr, **capturable)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, cfg.milestones, gamma=0.1)
        self.step = 0
        self.best_val_loss = math.inf  # of the weights in best.safetensors
        self.net = self.model
        if self.world > 1:
            # The quantiles only see the (data-independent) aux loss, identical on every
            # rank: keep them out of DDP's gradient reduction.
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self.model, [n for n, _ in self.model.named_parameters() if n.endswith(".quantiles")]
            )
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        self.graphed = None
        if cfg.cuda_graphs:
            reason = uncapturable(cfg)
            if reason:
                warnings.warn(f"--cuda-graphs: {reason}; training runs eagerly", RuntimeWarning, stacklevel=2)
            else:
                self.graphed = GraphedStep(self._update, [self.optimizer, self.aux_optimizer])

    # -- checkpoints -------------------------------------------------------------------
    def save(self, name: str = "last", with_state: bool = True) -> None:
        """Write ``name.safetensors`` (and ``name.state.pt`` to resume from), each atomically."""
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        files = [(self.out / f"{name}.safetensors", lambda p: save_model(self.model, p))]
        if with_state:
            files.append((self.out / f"{name}.state.pt", lambda p: torch.save(self._state(), p)))
        for path, write in files:
            tmp = path.with_suffix(path.suffix + ".part")
            write(tmp)
            os.replace(tmp, path)

    def _state(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_val_loss": self.best_val_loss,
            "train_config": json.dumps(asdict(self.cfg)),
        }

    def resume(self, name: str = "last") -> bool:
        """Continue from ``out_dir/name.*`` when present; returns whether it did."""
        weights, state = self.out / f"{name}.safetensors", self.out / f"{name}.state.pt"
        if not weights.exists():
            return False
        if not state.exists():
            raise CheckpointError(f"{weights} has no training state beside it ({state.name})")
        st = torch.load(state, map_location=self.device, weights_only=True)
        self._check_same_model(json.loads(st.get("train_config", "{}")))
        loaded = load_model(weights, map_location=str(self.device))
        self.model.load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(st["optimizer"])
        self.aux_optimizer.load_state_dict(st["aux_optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.step = int(st["step"])
        self.best_val_loss = float(st.get("best_val_loss", math.inf))  # runs saved before best.* existed
        return True

    def _check_same_model(self, saved: dict) -> None:
        """Refuse to resume a run of another model: its weights would not load (another
        config) or, worse, would go on training for another rate-distortion trade-off."""
        ours = asdict(self.cfg)

        def shown(value: object) -> object:  # cfrm_layers None: the config's own
            return "unset" if value is None else value

        differ = [
            f"--{k.replace('_', '-')} {shown(saved[k])} (not {shown(ours[k])})"
            for k in MODEL_FIELDS
            if k in saved and saved[k] != ours[k]
        ]
        if differ:
            raise InputError(
                f"{self.out} holds a run with {', '.join(differ)}: rerun with its options, or train into another -o"
            )

    # -- one step ----------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        self.net.train()
        x = self.data.batch(cfg.seed, self.step, self.rank, cfg.batch_size).to(self.device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(step_seed(cfg.seed, self.step, self.rank))  # quantization noise
        losses = self.graphed(x) if self.graphed is not None else self._update(x)
        self.scheduler.step()
        self.step += 1
        stats = {k: float(v) for k, v in losses.items()}
        if "mse_loss" in stats:
            stats["psnr"] = psnr(stats["mse_loss"])
        return stats

    def _update(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step's device work on the batch x: forward, RD loss, backward, clipping,
        both optimizers. Nothing in it reads a value back to the host, so that
        train_graphs.GraphedStep can capture it; it returns the losses as tensors."""
        cfg = self.cfg
        amp = (
            # A capture must not keep autocast's casts of the weights made outside it.
            torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not cfg.cuda_graphs)
            if cfg.amp == "bf16"
            else contextlib.nullcontext()
        )
        with use_backend(cfg.backend), amp:
            out = self.net(x, quantization=cfg.quantization, context_passes=cfg.context_passes)
        out = {"x_hat": out["x_hat"].float(), "likelihoods": {k: v.float() for k, v in out["likelihoods"].items()}}
        losses = self.criterion(out, x)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], cfg.clip)
        self.optimizer.step()
        self.aux_optimizer.zero_grad(set_to_none=True)
        aux = self.model.aux_loss()
        aux.backward()
        self.aux_optimizer.step()
        return {**{k: v.detach() for k, v in losses.items()}, "aux_loss": aux.detach()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Two measures on the validation images, in fp32. ``val_*``: the RD loss the model's
        forward estimates (evaluation mode, centre crop to a multiple of 64; an image smaller
        than that padded as a file pads it). ``val_file_*``:
        the real thing, each whole image coded as ``ainn compress`` codes it (format 4 latents,
        row streams and all: exact rate in bytes, the decoder's own y_hat, 8-bit
        reconstruction); the weights to ship
        are chosen on ``val_file_loss``, since the forward estimate can rank runs wrongly
        (docs/training-history.md)."""
        from .codec import pad_to_stride
        from .entropy_coding import encode_latents, shift_payload_bytes

        self.model.eval()
        # CDF tables of the current weights. The fixed-point copy needs no reset: it is
        # cached only for prepared (hashed) models, which the trainer's model never is.
        derive_cdf_tables_on_cpu(self.model)
        totals: dict[str, float] = {}
        files: dict[str, float] = {}
        for f in self.val_files:
            full = _load_rgb(f).float().div(255)[None].to(self.device)
            h, w = (full.shape[2] // STRIDE) * STRIDE, (full.shape[3] // STRIDE) * STRIDE
            if h and w:
                top, left = (full.shape[2] - h) // 2, (full.shape[3] - w) // 2
                x = full[:, :, top : top + h, left : left + w]
            else:  # smaller than the stride: the forward estimate of the image padded as a file pads it
                x = pad_to_stride(full)
            with use_backend(self.cfg.backend):
                out = self.model(x, context_passes=self.cfg.context_passes)  # the run's own proxy
                out["x_hat"] = out["x_hat"].clamp(0, 1)
                for k, v in self.criterion(out, x).items():
                    totals[k] = totals.get(k, 0.0) + float(v)
                (y_string,), (z_string,), y_hat, (shift,) = encode_latents(
                    self.model, self.model.g_a(pad_to_stride(full)), streams=None
                )
                x_hat = self.model.g_s(y_hat)[:, :, : full.shape[2], : full.shape[3]]
            coded = len(y_string) + len(z_string) + shift_payload_bytes(shift)
            rate = 8 * coded / (full.shape[2] * full.shape[3])
            x8 = x_hat.clamp(0, 1).mul(255).round().div(255)  # what a decoded file holds
            for k, v in self.criterion.with_rate(rate, x8, full).items():
                files[k] = files.get(k, 0.0) + float(v)
            files["psnr"] = files.get("psnr", 0.0) + psnr(float((x8 - full).square().mean()))
        n = max(1, len(self.val_files))
        stats = {f"val_{k}": v / n for k, v in totals.items()}
        if "val_mse_loss" in stats:
            stats["val_psnr"] = psnr(stats["val_mse_loss"])
        stats.update({f"val_file_{k}": v / n for k, v in files.items()})  # psnr: mean over images
        return stats

    def run(self, progress: bool = True) -> list[dict]:
        cfg = self.cfg
        from tqdm import tqdm

        history = []
        log = None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            log = open(self.out / "log.jsonl", "a")
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress or self.rank != 0, unit="step")
        try:
            while self.step < cfg.steps:
                start = time.perf_counter()
                stats = self.train_step()
                stats["images_per_s"] = cfg.batch_size * self.world / (time.perf_counter() - start)
                stats["step"] = self.step
                if self.device.type == "cuda":  # peak since the start: what a batch size costs
                    stats["max_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                if self.val_files and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                    stats.update(self.validate())
                    if stats["val_file_loss"] < self.best_val_loss:  # the weights to ship: real files, held out
                        self.best_val_loss = stats["val_file_loss"]
                        self.save("best", with_state=False)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self.save()
                history.append(stats)
                if log:
                    log.write(json.dumps(stats) + "\n")
                    log.flush()
                bar.update(1)
                bar.set_postfix(
                    loss=f"{stats['loss']:.3f}", bpp=f"{stats['bpp_loss']:.3f}",
                    psnr=f"{stats.get('psnr', float('nan')):.2f}", ips=f"{stats['images_per_s']:.1f}",
                    **({"mem_gib": f"{stats['max_memory_gib']:.1f}"} if "max_memory_gib" in stats else {}),
                )
        finally:
            bar.close()
            if log:
                log.close()
        return history


def derive_cdf_tables_on_cpu(model: torch.nn.Module) -> None:
    """Give ``model`` (on any device) the CDF tables a file of its weights is coded with:
    codec.prepare_model derives them on the CPU, and a GPU's floats can differ."""
    from compressai.entropy_models import EntropyModel

    cpu = copy.deepcopy(model).cpu()
    cpu.update(force=True)
    for name, module in model.named_modules():
        if isinstance(module, EntropyModel):
            derived = cpu.get_submodule(name)
            for key, value in derived.named_buffers(recurse=False):
                if is_derived(key):
                    setattr(module, key, value.to(getattr(module, key).device))


def init_distributed(device: str) -> None:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True) -> Trainer:
    init_distributed(cfg.device)
    if cfg.device.startswith("cuda") and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cfg.device = f"cuda:{local}"
        torch.cuda.set_device(local)  # NCCL's own collectives (barriers) use the current device
    trainer = Trainer(cfg)
    if resume:
        trainer.resume()
    trainer.run(progress)
    return trainer

"""The A-INN compression model (Gao et al., IEEE TIP 2025) as readable PyTorch."""

from __future__ import annotations

import torch
import torch.nn as nn
from compressai.entropy_models import GaussianConditional
from compressai.layers import MaskedConv2d, conv3x3, subpel_conv3x3
from compressai.models import CompressionModel, JointAutoregressiveHierarchicalPriors

from .. import ops
from ..layers import CFRM, FrequencyDecomposition, FrequencySynthesis, InvertibleNetwork, MultiScaleCFRM
from ..layers import ProgressiveDenoiser
from ..layers.context import CheckerboardContext
from ..layers.entropy_bottleneck import EntropyBottleneck
from .config import AINNConfig

STRIDE = 64  # total downsampling with the hyperprior: inputs must be multiples of it
QUANTIZATIONS = ("noise", "mixed")  # training-mode proxies for rounding (see AINN.forward)


class AINN(CompressionModel):
    """Approximately invertible network with a joint hyperprior + context entropy model.

    ``g_a`` and ``g_s`` are methods, not modules, because they share the invertible
    network's weights: the synthesis runs the same levels in inverse, repaired by CFRM,
    PDM and FDSM-S.
    """

    def __init__(self, config: AINNConfig) -> None:
        super().__init__()
        cfg = self.config = config
        N, M = self.N, self.M = config.N, config.M

        self.fdsm_d = FrequencyDecomposition()
        self.inn = InvertibleNetwork(cfg.kernel_sizes, cfg.coupling_hidden, cfg.couplings_per_level, cfg.clamp)
        width = self.inn.out_channels  # 768 per stream
        if (2 * width) % M:
            raise ValueError(f"M={M} must divide the {2 * width} channels of the two streams")
        self.cfrm = nn.ModuleList(CFRM(M, width, cfg.cfrm_layers) for _ in range(2))
        self.ms_cfrm = MultiScaleCFRM(M, width // 4, cfg.ms_cfrm_layers) if cfg.ms_cfrm else None
        # PDM after inverse level L sees the level's input width 3 * 4^(L-1); one per stream.
        self.pdm = nn.ModuleDict(
            {
                str(level): nn.ModuleList(
                    ProgressiveDenoiser(3 * 4 ** (level - 1), widths, cfg.pdm_step, cfg.pdm_unet_identity)
                    for _ in range(2)
                )
                for level, widths in sorted(cfg.pdm_widths.items(), reverse=True)
            }
        )
        self.fdsm_s = FrequencySynthesis(3, cfg.mask_ch)

        # Entropy model: Cheng2020-anchor hyper-networks, Minnen 2018 joint context.
        self.h_a = nn.Sequential(
            conv3x3(M, N),
            nn.LeakyReLU(inplace=True),
            conv3x3(N, N),
            nn.LeakyReLU(inplace=True),
            conv3x3(N, N, stride=2),
            nn.LeakyReLU(inplace=True),
            conv3x3(N, N),
            nn.LeakyReLU(inplace=True),
            conv3x3(N, N, stride=2),
        )
        self.h_s = nn.Sequential(
            conv3x3(N, N),
            nn.LeakyReLU(inplace=True),
            subpel_conv3x3(N, N, 2),
            nn.LeakyReLU(inplace=True),
            conv3x3(N, N * 3 // 2),
            nn.LeakyReLU(inplace=True),
            subpel_conv3x3(N * 3 // 2, N * 3 // 2, 2),
            nn.LeakyReLU(inplace=True),
            conv3x3(N * 3 // 2, M * 2),
        )
        if cfg.context == "checkerboard":
            self.context_prediction = CheckerboardContext(M, 2 * M, kernel_size=5)
        else:
            self.context_prediction = MaskedConv2d(M, 2 * M, kernel_size=5, padding=2, stride=1)
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(M * 12 // 3, M * 10 // 3, 1),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(M * 10 // 3, M * 8 // 3, 1),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(M * 8 // 3, M * 6 // 3, 1),
        )
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

    @property
    def downsampling_factor(self) -> int:
        return STRIDE

    def g_a(self, x: torch.Tensor) -> torch.Tensor:
        """Analysis: image (B, 3, H, W) -> latent y (B, M, H/16, W/16)."""
        x1, x2 = self.inn(*self.fdsm_d(x))
        return ops.group_mean(x1, x2, self.M)

    def g_s(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Synthesis, the approximate inverse: y_hat -> CFRM -> inverse levels with PDM -> FDSM-S."""
        x1, x2 = (cfrm(y_hat) for cfrm in self.cfrm)
        levels = self.inn.levels
        for number in range(len(levels), 0, -1):
            x1, x2 = levels[number - 1].inverse(x1, x2)
            key = str(number)
            if key in self.pdm:
                x1, x2 = self.pdm[key][0](x1), self.pdm[key][1](x2)
            if number == len(levels) and self.ms_cfrm is not None:
                x1, x2 = self.ms_cfrm(y_hat, x1, x2)
        return self.fdsm_s(x1, x2)

    def forward(self, x: torch.Tensor, quantization: str = "noise", context_passes: int = 1) -> dict:
        """RD forward pass. ``quantization`` chooses the training-mode proxy for rounding:
        ``"noise"`` (additive uniform noise for the rate, the context model and the
        decoder alike, as in the reference code) or ``"mixed"`` (noise for the rate; the
        context model sees round(y) and the decoder round(y - mean) + mean, both with a
        straight-through gradient). Evaluation mode rounds: the context model sees
        round(y), as in CompressAI, and the decoder round(y - mean) + mean, the values
        a real decoder reconstructs from the file (symbols plus means), so the
        evaluation's PSNR is the one files give, not that of an integer grid they never
        deliver.

        ``context_passes`` > 1 (rounded modes only) feeds the context model, instead of
        round(y), the y_hat of the previous pass, round(y - mean) + mean, starting from
        round(y): a file's context sees y_hat, whose means depend on earlier y_hat in
        turn. Each pass makes more positions agree with the serial decoder (all of them
        once the passes reach the number of latent positions). The symbols hardly move,
        the means do: with one pass a fifth to a third of y_hat of a held-out photo is
        more than 0.05 from its file's (docs/training-history.md). The passes before the
        last run without gradient."""
        h, w = x.shape[-2:]
        if x.dim() != 4 or x.shape[1] != 3 or h % STRIDE or w % STRIDE:
            raise ValueError(f"expected (B, 3, H, W) with H, W multiples of {STRIDE}, got {tuple(x.shape)}")
        return self.forward_latent(self.g_a(x), quantization, context_passes)

    def forward_latent(
        self, y: torch.Tensor, quantization: str = "noise", context_passes: int = 1, training: bool | None = None
    ) -> dict:
        """:meth:`forward` from the latent y on. ``training`` (default: the module's mode)
        chooses the entropy model's proxies alone: the encoder's latent refinement asks
        for training-mode rates from a model whose BatchNorms stay in evaluation mode."""
        y_hat, likelihoods = self.entropy_latent(y, quantization, context_passes, training)
        return {"x_hat": self.g_s(y_hat), "likelihoods": likelihoods}

    def entropy_latent(
        self,
        y: torch.Tensor,
        quantization: str = "noise",
        context_passes: int = 1,
        training: bool | None = None,
        z: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """The entropy model's half of :meth:`forward_latent`: the y_hat the synthesis is
        given and the likelihoods of y and z (for training the entropy model alone on
        cached latents). ``z``: the hyper-latent to code instead of h_a(y), for the
        encoder's refinement of both; h_s then sees the z_hat of its file (rounded about
        the medians, straight through), and its rate keeps the training proxy."""
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {quantization!r}; use noise or mixed")
        if context_passes < 1:
            raise ValueError(f"context_passes must be at least 1, got {context_passes}")
        training = self.training if training is None else training
        if z is None:
            z_hat, z_likelihoods = self.entropy_bottleneck(self.h_a(y), training=training)
        else:
            _, z_likelihoods = self.entropy_bottleneck(z, training=training)
            rounded_z = self.entropy_bottleneck.quantize(z, "dequantize", self.entropy_bottleneck._get_medians())
            z_hat = rounded_z.detach() + (z - z.detach())
        params = self.h_s(z_hat)
        rounded = not training or quantization == "mixed"
        if context_passes > 1 and not rounded:
            raise ValueError("context_passes > 1 needs rounding: use quantization='mixed' (or evaluation mode)")

        def gaussian_params_of(y_ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ctx_params = self.context_prediction(y_ctx)
            scales, means = self.entropy_parameters(torch.cat((params, ctx_params), dim=1)).chunk(2, 1)
            return scales, means

        def file_y_hat(means: torch.Tensor) -> torch.Tensor:  # what a file's decoder reconstructs
            return means + torch.round(y - means)

        if rounded:
            # Straight through: the value rounded exactly, the gradient of the identity in y.
            through = y - y.detach()
            with torch.no_grad():
                y_ctx = torch.round(y)
                for _ in range(context_passes - 1):
                    y_ctx = file_y_hat(gaussian_params_of(y_ctx)[1])
            y_ctx = y_ctx + through
        else:
            y_ctx = self.gaussian_conditional.quantize(y, "noise")
        scales_hat, means_hat = gaussian_params_of(y_ctx)
        _, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat, training=training)
        if rounded:
            y_hat = file_y_hat(means_hat).detach() + through
        else:
            y_hat = y_ctx
        return y_hat, {"y": y_likelihoods, "z": z_likelihoods}

    # Entropy coding: CompressAI's serial autoregressive coder for the same joint model,
    # borrowed as is (it only uses g_a/g_s, the hyper-networks and the entropy modules).
    # ainn_fast.codec is the product path (fixed point, wavefronts, checkerboard).
    def compress(self, x: torch.Tensor) -> dict:
        self._serial_only()
        return JointAutoregressiveHierarchicalPriors.compress(self, x)

    def decompress(self, strings: list, shape: tuple[int, int]) -> dict:
        self._serial_only()
        return JointAutoregressiveHierarchicalPriors.decompress(self, strings, shape)

    def _serial_only(self) -> None:
        if self.config.context != "serial":
            raise NotImplementedError("CompressAI's serial coder needs the serial context; use ainn_fast.codec")
    _compress_ar = JointAutoregressiveHierarchicalPriors._compress_ar
    _decompress_ar = JointAutoregressiveHierarchicalPriors._decompress_ar

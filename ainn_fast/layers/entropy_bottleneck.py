"""The hyper-latent's factorized prior: CompressAI's, with a forward that stays on the device."""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck as _CompressAIEntropyBottleneck


class EntropyBottleneck(_CompressAIEntropyBottleneck):
    """CompressAI's EntropyBottleneck, whose forward is the same ops with its
    (B, C, ...) <-> (C, B, ...) permutation held as Python ints.

    CompressAI 1.2.8 builds that permutation as a tensor on the input's device and unpacks
    it into ``permute``, one ``item()`` per dimension: on a GPU a host-to-device copy and
    12 device syncs per training step, which stall the host mid-forward and make the step
    impossible to capture as a CUDA graph (train_graphs.py). Weights, buffers, coding and
    results are CompressAI's (tests/test_model.py compares the two forwards bit for bit)."""

    def forward(self, x: torch.Tensor, training: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if training is None:
            training = self.training
        perm = (1, 0, *range(2, x.dim()))  # its own inverse
        x = x.permute(*perm).contiguous()
        shape = x.size()
        values = x.reshape(x.size(0), 1, -1)
        outputs = self.quantize(values, "noise" if training else "dequantize", self._get_medians())
        likelihood, _, _ = self._likelihood(outputs)
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        outputs = outputs.reshape(shape).permute(*perm).contiguous()
        likelihood = likelihood.reshape(shape).permute(*perm).contiguous()
        return outputs, likelihood

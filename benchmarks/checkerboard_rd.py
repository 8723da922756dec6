"""The rate cost of the checkerboard context, measured with real files.

Both entropy models start from the shipped lite q3 weights and are fine-tuned the same
way on the same data for the same steps: the serial 5x5 context as shipped, and the
checkerboard context (its taps initialised from the serial ones that it keeps). Only the
entropy model trains (h_a, h_s, context, entropy parameters, factorized prior) on cached
latents of random crops, with the rate as the loss: the transforms are frozen, so the
distortion is the same up to the slightly different means, and the rate difference is the
cost of the context. Then both code the evaluation photos through ``ainn_fast.codec``
(file sizes, PSNR) and decode a 768x512 photo (latent decode time).

    python benchmarks/checkerboard_rd.py TRAIN_DIR EVAL_DIR -o benchmarks/results/checkerboard_rd.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ainn_fast import bench, codec, container, entropy_coding, zoo
from ainn_fast.checkpoint import restore_bounds, with_context
from ainn_fast.losses import aux_loss

CROP = 256


def latents(model, folder: Path, crops: int, seed: int) -> torch.Tensor:
    """y of ``crops`` random CROP x CROP crops (with flips) of the photos in ``folder``."""
    rng = random.Random(seed)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.iterdir())]
    ys = []
    with torch.no_grad():
        for _ in range(crops):
            img = rng.choice(images)
            i, j = rng.randrange(img.shape[0] - CROP + 1), rng.randrange(img.shape[1] - CROP + 1)
            x = torch.from_numpy(img[i : i + CROP, j : j + CROP].copy()).permute(2, 0, 1).float().div(255)
            if rng.random() < 0.5:
                x = x.flip(-1)
            ys.append(model.g_a(x[None])[0])
    return torch.stack(ys)


def rate(model, y: torch.Tensor) -> torch.Tensor:
    """Bits per pixel of the training forward pass (noise quantization), y cached."""
    z = model.h_a(y)
    z_hat, z_lik = model.entropy_bottleneck(z)
    params = model.h_s(z_hat)
    y_hat = model.gaussian_conditional.quantize(y, "noise")
    scales, means = model.entropy_parameters(torch.cat((params, model.context_prediction(y_hat)), 1)).chunk(2, 1)
    _, y_lik = model.gaussian_conditional(y, scales, means=means)
    pixels = y.shape[0] * (16 * y.shape[2]) * (16 * y.shape[3])
    return (-torch.log2(y_lik).sum() - torch.log2(z_lik).sum()) / pixels


def finetune(model, ys: torch.Tensor, steps: int, batch: int, lr: float, seed: int) -> list[float]:
    parts = [model.h_a, model.h_s, model.context_prediction, model.entropy_parameters, model.entropy_bottleneck]
    params = [p for m in parts for n, p in m.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.Adam(params, lr=lr)
    aux_opt = torch.optim.Adam([model.entropy_bottleneck.quantiles], lr=1e-3)
    for m in parts:
        m.train()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the quantization noise: the same sequence for both models
    losses = []
    for _ in range(steps):
        y = ys[torch.randint(len(ys), (batch,), generator=gen)]
        loss = rate(model, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        aux_opt.zero_grad()
        aux_loss(model).backward()
        aux_opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def evaluate(model, folder: Path) -> dict:
    model = codec.prepare_model(model)
    rows = []
    for path in sorted(folder.iterdir()):
        img = Image.open(path).convert("RGB")
        data = codec.compress(img, model)
        out = codec.decompress(data, model)
        mse = np.mean((np.asarray(img, dtype=np.float64) - np.asarray(out, dtype=np.float64)) ** 2)
        rows.append({"image": path.name, "bytes": len(data), "bpp": 8 * len(data) / (img.size[0] * img.size[1]),
                     "psnr": 10 * math.log10(255**2 / mse)})
    photo = bench.photo(768, 512)
    c = container.unpack(codec.compress(photo, model))
    latent = codec.latent_size(c.header)
    shifts = [c.y_shift()]
    decode = lambda: entropy_coding.decode_latents(model, [c.y], [c.z], [latent], scale_shifts=shifts)  # noqa: E731
    seconds, _ = bench.timed(decode, torch.device("cpu"), 5)
    return {"images": rows, "bytes": sum(r["bytes"] for r in rows), "mean_psnr": float(np.mean([r["psnr"] for r in rows])),
            "decode_latents_768x512_s": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("train_dir", type=Path)
    p.add_argument("eval_dir", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--crops", type=int, default=400)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    shipped = restore_bounds(zoo.ainn(3, config="lite", pretrained=True)).eval()
    ys = latents(shipped, args.train_dir, args.crops, seed=0)
    results = {"machine": bench.machine(torch.device("cpu")), "steps": args.steps, "batch": args.batch,
               "crops": args.crops, "lr": args.lr, "shipped_serial": evaluate(copy.deepcopy(shipped), args.eval_dir)}
    for name, model in (("serial", copy.deepcopy(shipped)), ("checkerboard", with_context(shipped, "checkerboard"))):
        losses = finetune(model, ys, args.steps, args.batch, args.lr, seed=1)
        results[name] = evaluate(model, args.eval_dir)
        results[name]["train_rate_first_last_100"] = [float(np.mean(losses[:100])), float(np.mean(losses[-100:]))]
    results["checkerboard_rate_cost_percent"] = 100 * (results["checkerboard"]["bytes"] / results["serial"]["bytes"] - 1)
    results["wall_s"] = time.time() - start
    args.output.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: results[k] for k in ("checkerboard_rate_cost_percent", "wall_s")}))
    for name in ("shipped_serial", "serial", "checkerboard"):
        r = results[name]
        print(f"{name:>15}: {r['bytes']} B, PSNR {r['mean_psnr']:.3f} dB, latent decode {r['decode_latents_768x512_s'] * 1e3:.0f} ms")


if __name__ == "__main__":
    main()

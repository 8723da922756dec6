"""The rate cost of the checkerboard context, measured with real files.

Both entropy models start from the shipped lite q3 weights and are fine-tuned the same
way on the same data: the checkerboard context (its taps initialised from the serial ones
that it keeps) for ``--steps``, and, as a control, the serial 5x5 context as shipped for
``--control-steps`` (the shipped model is converged: the control shows how far the
procedure alone moves a model's files). Only the entropy model trains (h_a, h_s, context,
entropy parameters, factorized prior) on cached latents of random crops, with the rate
of the proxy the shipped weights were trained with (``mixed``: the context fed y_hat as a
file's decoder sees it) as the loss; the transforms are frozen, and with that proxy the
distortion gives the entropy model no gradient, so this is the RD loss's own gradient.
Every ``--eval-every`` steps each codes the evaluation photos through ``ainn_fast.codec``:
file bytes, PSNR of the 8-bit decode and J, the files' RD loss (the distortion moves a
little with the means). At the end, each decodes the latents of a 768x512 photo (time).
The two fine-tunes run side by side, one process and one thread each.

    python benchmarks/checkerboard_rd.py TRAIN_DIR EVAL_DIR -o benchmarks/results/checkerboard_rd_mixed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ainn_fast import bench, codec, container, entropy_coding, zoo
from ainn_fast.checkpoint import restore_bounds, with_context
from ainn_fast.losses import aux_loss, bpp
from ainn_fast.refinement import rd_cost

CROP = 256
# Context passes of the mixed proxy: the serial context as the shipped weights were trained;
# two make the checkerboard's exact (its anchors' y_hat depends on the hyperprior alone).
PASSES = {"serial": 16, "checkerboard": 2}
WARMUP = 200


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


def rate(model, y: torch.Tensor, passes: int) -> torch.Tensor:
    """Bits per pixel of the training forward pass on cached y, with the proxy the shipped
    weights were trained with (``mixed``: noise for the rate, the context fed y_hat as a
    file's decoder has it, ``passes`` times)."""
    _, likelihoods = model.entropy_latent(y, "mixed", passes, training=True)
    return bpp(likelihoods, y.shape[0] * (16 * y.shape[2]) * (16 * y.shape[3]))


def finetune(model, ys: torch.Tensor, steps: int, batch: int, lr: float, seed: int, eval_every: int, eval_dir: Path) -> dict:
    """Fine-tune the entropy model for ``steps``, coding the evaluation photos every
    ``eval_every`` steps and at the end (one thread: the two contexts run side by side)."""
    torch.set_num_threads(1)
    parts = [model.h_a, model.h_s, model.context_prediction, model.entropy_parameters, model.entropy_bottleneck]
    params = [p for m in parts for n, p in m.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.Adam(params, lr=lr)
    aux_opt = torch.optim.Adam([model.entropy_bottleneck.quantiles], lr=1e-3)
    # Warm-up, then cosine decay to 0: Adam's first steps at full rate move every weight
    # by about lr at once (at 1e-4 the shipped serial model's files grew 3 % in three
    # steps); the decay lets both contexts settle before their files are measured.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * k / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the quantization noise: the same sequence for both models
    losses, evaluations, start = [], {}, time.time()
    for m in parts:
        m.train()
    for step in range(1, steps + 1):
        y = ys[torch.randint(len(ys), (batch,), generator=gen)]
        loss = rate(model, y, PASSES[model.config.context])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        aux_opt.zero_grad()
        aux_loss(model).backward()
        aux_opt.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            evaluations[step] = evaluate(model, eval_dir, time_decode=step == steps)
            evaluations[step]["train_rate_last_100"] = float(np.mean(losses[-100:]))
            for m in parts:  # evaluate() left the model in evaluation mode
                m.train()
            print(f"{model.config.context} step {step}: {evaluations[step]['bytes']} B, mean J {evaluations[step]['mean_J']:.4f}, "
                  f"{time.time() - start:.0f} s", flush=True)
    return {"train_rate_first_100": float(np.mean(losses[:100])), "train_s": time.time() - start, "evaluations": evaluations}


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def evaluate(model, folder: Path, time_decode: bool = True) -> dict:
    """Real files of the photos in ``folder``: bytes (and those of the hyper-latent z), PSNR
    of the 8-bit decode, and J, the RD loss of the file (bpp + lambda 255^2 MSE, the
    quantity training lowers)."""
    model = codec.prepare_model(model)
    rows = []
    for path in sorted(folder.iterdir()):
        img = Image.open(path).convert("RGB")
        data = codec.compress(img, model)
        out = codec.decompress(data, model)
        mse = np.mean((np.asarray(img, dtype=np.float64) - np.asarray(out, dtype=np.float64)) ** 2)
        rows.append({"image": path.name, "bytes": len(data), "z_bytes": len(container.unpack(data).z),
                     "bpp": 8 * len(data) / (img.size[0] * img.size[1]), "psnr": 10 * math.log10(255**2 / mse),
                     "J": rd_cost(model, len(data), _tensor(out), _tensor(img))})
    result = {"images": rows, "bytes": sum(r["bytes"] for r in rows), "mean_psnr": float(np.mean([r["psnr"] for r in rows])),
              "mean_J": float(np.mean([r["J"] for r in rows]))}
    if time_decode:
        photo = bench.photo(768, 512)
        c = container.unpack(codec.compress(photo, model))
        latent = codec.latent_size(c.header)
        shifts = [c.y_shift()]
        decode = lambda: entropy_coding.decode_latents(model, [c.y_streams()], [c.z], [latent], scale_shifts=shifts)  # noqa: E731
        result["decode_latents_768x512_s"] = bench.timed(decode, torch.device("cpu"), 5)[0]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("train_dir", type=Path)
    p.add_argument("eval_dir", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--crops", type=int, default=600)
    p.add_argument("--steps", type=int, default=10000, help="fine-tuning steps of the checkerboard context")
    p.add_argument("--control-steps", type=int, default=2000, help="the same fine-tuning of the serial context (0: none)")
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    shipped = restore_bounds(zoo.ainn(3, config="lite", pretrained=True)).eval()
    ys = latents(shipped, args.train_dir, args.crops, seed=0)
    results = {"machine": bench.machine(torch.device("cpu")), "proxy": f"mixed, context passes {PASSES}",
               "batch": args.batch, "crops": args.crops, "lr": args.lr, "schedule": f"{WARMUP} warm-up steps, cosine to 0",
               "shipped_serial": evaluate(copy.deepcopy(shipped), args.eval_dir)}
    # Two processes, one thread each: the serial control's 16 passes cost 4x a checkerboard step.
    runs = {"serial": (copy.deepcopy(shipped), args.control_steps), "checkerboard": (with_context(shipped, "checkerboard"), args.steps)}
    runs = {name: run for name, run in runs.items() if run[1] > 0}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {name: pool.submit(finetune, model, ys, steps, args.batch, args.lr, 1, args.eval_every, args.eval_dir)
                for name, (model, steps) in runs.items()}
        for name, job in jobs.items():
            results[name] = job.result()
    base = results["shipped_serial"]
    for name in runs:
        for step, r in results[name]["evaluations"].items():
            r["bytes_vs_shipped_percent"] = 100 * (r["bytes"] / base["bytes"] - 1)
            r["J_vs_shipped_percent"] = 100 * float(np.mean([a["J"] / b["J"] - 1 for a, b in zip(r["images"], base["images"])]))
    results["wall_s"] = time.time() - start
    args.output.write_text(json.dumps(results, indent=2))
    print(f"shipped serial: {base['bytes']} B, PSNR {base['mean_psnr']:.3f} dB, mean J {base['mean_J']:.4f}, "
          f"latent decode {base['decode_latents_768x512_s'] * 1e3:.0f} ms")
    for name in runs:
        for step, r in results[name]["evaluations"].items():
            print(f"{name:>12} {step:>6}: {r['bytes']} B ({r['bytes_vs_shipped_percent']:+.2f} %), PSNR {r['mean_psnr']:.3f} dB, "
                  f"J {r['J_vs_shipped_percent']:+.2f} %, training rate {r['train_rate_last_100']:.4f}")


if __name__ == "__main__":
    main()

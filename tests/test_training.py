"""Training: the loss falls, a resumed run repeats the same losses, DDP equals one process."""

import copy
import json
import math
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from ainn_fast import use_backend
from ainn_fast.cli import main
from ainn_fast.checkpoint import is_derived, load_model
from ainn_fast.losses import lambda_for
from ainn_fast.training import TrainConfig, Trainer, step_seed, uncapturable


@pytest.fixture(scope="module")
def photo_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    (root / "train").mkdir()
    (root / "val").mkdir()
    Image.fromarray(data.astronaut()[100:260, 150:350]).save(root / "train" / "a.png")
    Image.fromarray(data.coffee()[50:200, 100:300]).save(root / "train" / "b.jpg")
    Image.fromarray(data.chelsea()[:128, :128]).save(root / "val" / "c.png")
    return root


def config(photo_dirs, out, **kw):
    base = dict(
        train_dirs=[str(photo_dirs / "train")], val_dirs=[str(photo_dirs / "val")], out_dir=str(out),
        config="tiny", quality=6, patch_size=64, batch_size=2, steps=6, lr=1e-3, val_every=3, ckpt_every=3,
        backend="reference",
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("quantization, passes", [("noise", 1), ("mixed", 1), ("mixed", 4)])
def test_steps_lower_the_loss(photo_dirs, tmp_path, quantization, passes):
    trainer = Trainer(config(photo_dirs, tmp_path, steps=30, batch_size=2, val_every=30, quantization=quantization,
                             context_passes=passes))
    history = trainer.run(progress=False)
    first = np.mean([h["loss"] for h in history[:3]])
    last = np.mean([h["loss"] for h in history[-3:]])
    assert last < 0.3 * first, (first, last)
    assert "val_psnr" in history[-1] and history[-1]["val_psnr"] > history[0].get("psnr", 0)


def test_resume_repeats_the_same_losses(photo_dirs, tmp_path):
    straight = Trainer(config(photo_dirs, tmp_path / "a")).run(progress=False)
    first = Trainer(config(photo_dirs, tmp_path / "b", steps=3))
    part1 = first.run(progress=False)
    second = Trainer(config(photo_dirs, tmp_path / "b"))
    assert second.resume() and second.step == 3
    part2 = second.run(progress=False)
    losses = [h["loss"] for h in part1 + part2]
    assert losses == [h["loss"] for h in straight]  # bit-identical, not just close


def test_best_checkpoint_holds_the_weights_of_the_lowest_validation_loss(photo_dirs, tmp_path):
    # lr 3e-3 makes the validation loss move up and down over the 8 steps, so "best" is
    # not simply "last"; interrupting at step 4 and resuming must not change the choice.
    cfg = dict(steps=8, val_every=1, ckpt_every=4, lr=3e-3)
    Trainer(config(photo_dirs, tmp_path, **{**cfg, "steps": 4})).run(progress=False)
    resumed = Trainer(config(photo_dirs, tmp_path, **cfg))
    assert resumed.resume()
    resumed.run(progress=False)
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    best = min(logged, key=lambda h: h["val_file_loss"])  # chosen on real files
    assert (tmp_path / "best.safetensors").exists() and not (tmp_path / "best.state.pt").exists()
    check = Trainer(config(photo_dirs, tmp_path / "check", init_checkpoint=str(tmp_path / "best.safetensors")))
    assert check.validate()["val_file_loss"] == pytest.approx(best["val_file_loss"], rel=1e-6)
    assert resumed.best_val_loss == best["val_file_loss"]
    from ainn_fast.errors import InputError

    with pytest.raises(InputError, match="holds a tiny model; pass --config tiny"):  # not a silent tiny run
        Trainer(config(photo_dirs, tmp_path / "other", config="lite", init_checkpoint=str(tmp_path / "best.safetensors")))


def test_validation_measures_what_a_real_file_gives(photo_dirs, tmp_path):
    """val_file_* must be the bytes of the file ainn compress writes (less the container
    header) and the PSNR of what ainn decompress returns."""
    from ainn_fast import codec, container

    trainer = Trainer(config(photo_dirs, tmp_path, steps=3))
    trainer.run(progress=False)
    stats = trainer.validate()
    model = codec.prepare_model(trainer.model)
    image = Image.open(photo_dirs / "val" / "c.png")
    data = codec.compress(image, model=model)
    c = container.unpack(data)
    pixels = image.width * image.height
    assert stats["val_file_bpp_loss"] == pytest.approx(8 * (len(c.y) + len(c.z)) / pixels, rel=1e-6)
    decoded = np.asarray(codec.decompress(data, model=model), dtype=np.float64)
    mse = np.mean((decoded - np.asarray(image, dtype=np.float64)) ** 2)
    assert stats["val_file_psnr"] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-4)
    assert stats["val_file_loss"] == pytest.approx(lambda_for(6) * mse + stats["val_file_bpp_loss"], rel=1e-5)


def test_validation_averages_every_image_even_one_smaller_than_the_stride(photo_dirs, tmp_path):
    # A 40x50 image has no 64-multiple crop; it was skipped, yet counted in the mean (and
    # alone it left no val_file_loss: a KeyError mid-training).
    small, large = tmp_path / "small", photo_dirs / "val"
    small.mkdir()
    Image.fromarray(data.coffee()[:40, :50]).save(small / "s.png")
    alone = {}
    for name, dirs in (("small", [str(small)]), ("large", [str(large)]), ("both", [str(small), str(large)])):
        trainer = Trainer(config(photo_dirs, tmp_path / name, val_dirs=dirs))
        alone[name] = trainer.validate()
    for key in ("val_loss", "val_file_loss", "val_file_bpp_loss"):
        assert math.isfinite(alone["small"][key]), key
        assert alone["both"][key] == pytest.approx((alone["small"][key] + alone["large"][key]) / 2, rel=1e-6), key


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_validation_codes_with_the_cdf_tables_a_file_gets(device):
    """On any training device, the tables validation codes with are the CPU-derived ones
    codec.prepare_model gives every file (floats on a GPU may differ by an ulp)."""
    from ainn_fast import codec, zoo
    from ainn_fast.training import derive_cdf_tables_on_cpu

    torch.manual_seed(0)
    model = zoo.ainn(6, config="tiny").to(device)
    with torch.no_grad():  # quantiles and scales that are not the initial ones
        model.entropy_bottleneck.quantiles.add_(torch.randn_like(model.entropy_bottleneck.quantiles))
    derive_cdf_tables_on_cpu(model)
    expected = codec.prepare_model(copy.deepcopy(model).cpu()).state_dict()
    tables = {k: v for k, v in model.state_dict().items() if is_derived(k) and not k.endswith("mask")}
    assert len(tables) == 7
    for key, value in tables.items():
        assert value.device.type == device
        assert torch.equal(value.cpu(), expected[key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend, amp", [("reference", "none"), ("triton", "none"), ("native", "none"), ("reference", "bf16")])
def test_cuda_graphed_steps_follow_the_eager_steps(photo_dirs, tmp_path, backend, amp):
    """After the eager warm-up, steps replayed from a CUDA graph give the losses and
    weights of the same steps run eagerly, and a milestone (a new learning rate) captures
    again. Both runs use the capturable Adam, so the arithmetic is the same kernels on the
    same values; cuDNN's weight-gradient sums may take another order run to run, hence
    close (1e-3 relative over 9 steps), not equal."""
    from ainn_fast.backend import unavailable_reason

    if unavailable_reason(backend, "cuda"):
        pytest.skip(unavailable_reason(backend, "cuda"))
    kw = dict(device="cuda", backend=backend, amp=amp, steps=9, val_every=100, ckpt_every=100, milestones=[6],
              cuda_graphs=True)
    eager = Trainer(config(photo_dirs, tmp_path / "eager", **kw))
    eager.graphed = None
    graphed = Trainer(config(photo_dirs, tmp_path / "graphed", **kw))
    want, got = eager.run(progress=False), graphed.run(progress=False)
    g = graphed.graphed
    assert g.failed is None and g.graph is not None and g.captured_lrs[0] == pytest.approx(1e-4)  # lr 1e-3 / 10
    for key in ("loss", "bpp_loss", "mse_loss", "aux_loss"):
        np.testing.assert_allclose([h[key] for h in got], [h[key] for h in want], rtol=1e-3, err_msg=key)
    for (name, a), b in zip(graphed.model.state_dict().items(), eager.model.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_step_that_cannot_be_captured_runs_eagerly_with_a_warning():
    from ainn_fast.train_graphs import WARMUP_STEPS, GraphedStep

    def make():
        w = torch.ones(4, device="cuda", requires_grad=True)
        opt = torch.optim.Adam([w], lr=0.1, capturable=True)

        def update(x):
            opt.zero_grad(set_to_none=True)
            loss = (w * x).square().sum()
            loss.backward()
            if float(loss) < 0:  # a read back to the host: cannot be captured
                raise AssertionError
            opt.step()
            return {"loss": loss.detach()}

        return w, update

    w, update = make()
    step = GraphedStep(update, [torch.optim.Adam([torch.zeros(1)])])
    w_eager, update_eager = make()
    x = torch.arange(4.0, device="cuda")
    for i in range(WARMUP_STEPS + 2):
        if i == WARMUP_STEPS:
            with pytest.warns(RuntimeWarning, match="could not be captured"):
                got = step(x)
        else:
            got = step(x)
        assert float(got["loss"]) == float(update_eager(x)["loss"])
    assert step.failed and step.graph is None
    assert torch.equal(w, w_eager)


@pytest.mark.parametrize("backend, amp", [("reference", "none"), ("native", "none"), ("triton", "none"), ("reference", "bf16")])
def test_the_training_step_reads_nothing_back_to_the_host(photo_dirs, tmp_path, backend, amp):
    """What a CUDA graph capture needs, checked on the CPU: forward, loss, backward and
    clipping of a training step (mixed quantization, 3 context passes) call no op that
    reads a value back to the host (item(), float(tensor), data-dependent shapes) or makes
    a tensor from host data (CompressAI's EntropyBottleneck did both: layers/entropy_bottleneck.py). The
    optimizers' own steps are left out here: on the CPU Adam keeps its step count on the
    host; a capture uses capturable Adam, whose count lives on the device."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ainn_fast.backend import unavailable_reason

    if unavailable_reason(backend, "cpu"):
        pytest.skip(unavailable_reason(backend, "cpu"))
    # Reads back (item(), float(), data-dependent shapes), and tensors made from host data
    # (torch.tensor: on a GPU a copy from pageable host memory, which a capture refuses).
    syncing = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "item", "lift_fresh"}

    class Reads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen, self.paused = [], False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not self.paused and func.overloadpacket.__name__ in syncing:
                self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    trainer = Trainer(config(photo_dirs, tmp_path, backend=backend, amp=amp, quantization="mixed", context_passes=3))
    mode = Reads()
    for opt in (trainer.optimizer, trainer.aux_optimizer):
        def step(*a, _step=opt.step, **k):
            mode.paused = True
            try:
                return _step(*a, **k)
            finally:
                mode.paused = False

        opt.step = step
    x = trainer.data.batch(0, 0, 0, 2)
    with mode:
        losses = trainer._update(x.contiguous(memory_format=torch.channels_last))
    assert mode.seen == [] and all(torch.isfinite(v) for v in losses.values())
    assert not mode.paused and trainer.optimizer.state  # the optimizers did step


def test_ms_ssim_steps_are_not_captured_and_say_why(photo_dirs, tmp_path):
    """pytorch_msssim makes tensors from host data in every call (seen on the CPU with
    the dispatch-mode check above): a capture would fail, so the trainer does not try."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ainn_fast.losses import RateDistortionLoss

    made = []

    class HostData(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ == "lift_fresh":
                made.append(func)
            return func(*args, **(kwargs or {}))

    x = torch.rand(1, 3, 192, 192)
    with HostData():
        RateDistortionLoss(1.0, "ms-ssim").with_rate(torch.zeros(()), x, x.flip(-1))
    assert made  # the reason; if pytorch_msssim stops doing this, graphs can be allowed
    assert "MS-SSIM" in uncapturable(config(photo_dirs, tmp_path, metric="ms-ssim"))
    assert uncapturable(config(photo_dirs, tmp_path)) is None


def test_graphed_step_refuses_a_cpu_batch():
    from ainn_fast.train_graphs import GraphedStep

    with pytest.raises(ValueError, match="CUDA batch"):
        GraphedStep(lambda x: {}, [])(torch.zeros(2))


def test_crops_are_a_pure_function_of_seed_step_rank(photo_dirs):
    from ainn_fast.training import CropBatches, list_images

    batches = CropBatches(list_images([str(photo_dirs / "train")]), 64)
    a = batches.batch(0, 5, 0, 3)
    assert torch.equal(a, batches.batch(0, 5, 0, 3))
    assert not torch.equal(a, batches.batch(0, 5, 1, 3))
    assert not torch.equal(a, batches.batch(0, 6, 0, 3))
    assert a.shape == (3, 3, 64, 64) and 0 <= a.min() and a.max() <= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    trainer = Trainer(cfg)
    trainer.run(progress=False)
    if rank == 0:
        torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, result)
    dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process_on_the_global_batch(photo_dirs, tmp_path):
    # SGD: Adam's first steps move every weight by +-lr whatever the gradient's size, so
    # the last-bit differences of a distributed all-reduce would flip near-zero gradients
    # into lr-sized weight differences; with SGD the weights differ by rounding only.
    cfg = config(photo_dirs, tmp_path / "ddp", steps=3, val_dirs=[], batch_size=2, optimizer="sgd", lr=0.05)
    result = str(tmp_path / "ddp.pt")
    torch.multiprocessing.start_processes(
        _ddp_worker, args=(2, _free_port(), cfg, result), nprocs=2, join=True, start_method="spawn"
    )
    ddp = torch.load(result, weights_only=True)

    # One process, same global batch: rank r's crops and noise, gradients averaged.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers
    single = Trainer(config(photo_dirs, tmp_path / "single", steps=3, val_dirs=[], batch_size=2, optimizer="sgd", lr=0.05))
    initial = {n: p.detach().clone() for n, p in single.model.named_parameters()}
    ctx = use_backend(cfg.backend)
    ctx.__enter__()
    for step in range(3):
        single.optimizer.zero_grad()
        for rank in (0, 1):
            x = single.data.batch(cfg.seed, step, rank, cfg.batch_size)
            torch.manual_seed(step_seed(cfg.seed, step, rank))
            (single.criterion(single.model(x), x)["loss"] / 2).backward()
        torch.nn.utils.clip_grad_norm_(single.optimizer.param_groups[0]["params"], cfg.clip)
        single.optimizer.step()
        single.aux_optimizer.zero_grad()
        single.model.aux_loss().backward()
        single.aux_optimizer.step()
    ctx.__exit__(None, None, None)
    torch.set_num_threads(threads)
    mine = single.model.state_dict()
    moved = max((mine[n] - p0).abs().max().item() for n, p0 in initial.items())
    assert moved > 1e-3  # the weights really changed
    for name, _ in single.model.named_parameters():
        torch.testing.assert_close(ddp[name], mine[name], rtol=1e-4, atol=1e-6, msg=name)


def test_an_init_grows_its_cfrm_and_starts_as_the_same_model(photo_dirs, tmp_path):
    from ainn_fast.errors import InputError

    Trainer(config(photo_dirs, tmp_path / "a", steps=2)).run(progress=False)
    init = str(tmp_path / "a" / "last.safetensors")
    same = Trainer(config(photo_dirs, tmp_path / "b", init_checkpoint=init))
    grown = Trainer(config(photo_dirs, tmp_path / "c", init_checkpoint=init, cfrm_layers=3, steps=2))
    assert len(same.model.cfrm[0].layers) == 1 and len(grown.model.cfrm[0].layers) == 3
    # The new layers read into lff through zero weights: the same real files, to the bit.
    assert grown.validate()["val_file_loss"] == same.validate()["val_file_loss"]
    grown.run(progress=False)
    assert len(load_model(tmp_path / "c" / "last.safetensors").cfrm[1].layers) == 3
    resumed = Trainer(config(photo_dirs, tmp_path / "c", init_checkpoint=init, cfrm_layers=3, steps=3))
    assert resumed.resume() and resumed.step == 2  # the grown run resumes as it was saved
    with pytest.raises(InputError, match="can grow them, not remove any"):
        Trainer(config(photo_dirs, tmp_path / "d", init_checkpoint=str(tmp_path / "c" / "last.safetensors"), cfrm_layers=1))


def test_cli_train_and_resume(photo_dirs, tmp_path, capsys):
    argv = ["train", str(photo_dirs / "train"), "-o", str(tmp_path / "run"), "--config", "tiny", "--steps", "2",
            "--batch-size", "1", "--patch-size", "64", "--backend", "reference"]
    assert main(argv) == 0
    assert (tmp_path / "run" / "last.safetensors").exists() and (tmp_path / "run" / "last.state.pt").exists()
    assert main(argv[:-6] + ["--steps", "3", "--batch-size", "1", "--patch-size", "64"]) == 0
    assert "step 3" in capsys.readouterr().out
    rc = main(argv + ["--no-resume"])
    assert rc == 2 and "holds a run already" in capsys.readouterr().err
    before = (tmp_path / "run" / "last.safetensors").read_bytes()
    refused = (
        (["--quality", "5"], "--quality 3 (not 5)"),
        (["--config", "lite"], "--config tiny (not lite)"),
        (["--cfrm-layers", "2"], "--cfrm-layers unset (not 2)"),
    )
    for option, message in refused:
        rc = main(argv + option)  # another model's run: refused before it loads, the run untouched
        assert rc == 2 and f"holds a run with {message}: rerun with its options" in capsys.readouterr().err
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == before
    rc = main(["train", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")])
    assert rc == 2 and "no such folder" in capsys.readouterr().err
    rc = main(argv + ["--quantization", "round"])
    assert rc == 2 and "invalid choice: 'round'" in capsys.readouterr().err
    rc = main(argv + ["--context-passes", "2"])  # the default quantization, noise, has no y_hat to feed back
    assert rc == 2 and "--context-passes 2: use 1, or more with --quantization mixed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, message",
    [
        (dict(patch_size=30), "--patch-size 30: use a multiple of 64"),
        (dict(batch_size=0), "--batch-size 0: use 1 or more"),
        (dict(steps=-1), "--steps -1"),
        (dict(lr=-1.0), "learning rates must be positive"),
        (dict(aux_lr=0.0), "learning rates must be positive"),
        (dict(clip=-1.0), "--clip -1.0"),
        (dict(ckpt_every=0), "--ckpt-every 0: use 1 or more"),
        (dict(milestones=[0]), "--milestones 0"),
        (dict(cfrm_layers=-1), "--cfrm-layers -1: use 0 or more"),
        (dict(cuda_graphs=True, device="cpu"), "--cuda-graphs needs --device cuda and a single process"),
    ],
)
def test_settings_no_run_can_use_are_refused_before_loading(photo_dirs, tmp_path, option, message):
    from ainn_fast.errors import InputError

    # train_dirs that do not exist: the settings are checked before the images are looked for
    with pytest.raises(InputError, match=message):
        Trainer(config(photo_dirs, tmp_path, train_dirs=[str(tmp_path / "nothing")], **option))
    assert not (tmp_path / "last.safetensors").exists()


def test_an_unavailable_backend_is_a_user_error_before_training(photo_dirs, tmp_path, capsys, monkeypatch):
    import ainn_fast

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if ainn_fast.backend.unavailable_reason("triton", "cpu") is None:
        pytest.skip("triton runs on the CPU here")
    rc = main(["train", str(photo_dirs / "train"), "-o", str(tmp_path / "run"), "--config", "tiny", "--backend", "triton"])
    assert rc == 2 and "error: backend 'triton' cannot run on cpu" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_unknown_quantization_is_refused_before_training(photo_dirs, tmp_path):
    from ainn_fast.errors import InputError

    with pytest.raises(InputError, match="unknown quantization 'round'"):
        Trainer(config(photo_dirs, tmp_path, quantization="round"))
    with pytest.raises(InputError, match="--context-passes 2"):
        Trainer(config(photo_dirs, tmp_path, context_passes=2))  # noise has no rounded y_hat to feed back


def test_restore_bounds_undoes_fp16_rounding_of_the_likelihood_bound():
    from ainn_fast import zoo
    from ainn_fast.checkpoint import restore_bounds

    model = zoo.ainn(3, config="lite", pretrained=True)  # shipped fp16: the 1e-9 bound became 0
    gc = model.gaussian_conditional
    y = torch.tensor([[[[40.0]]]]).expand(1, model.M, 1, 1)  # far in the tail
    scales, means = torch.full_like(y, 0.11), torch.zeros_like(y)
    assert gc(y, scales, means, training=False)[1].min() == 0  # log would be -inf: training diverges
    restore_bounds(model)
    _, likelihood = gc(y, scales, means, training=False)
    assert likelihood.min() == pytest.approx(1e-9) and gc.lower_bound_scale.bound.item() == pytest.approx(0.11)

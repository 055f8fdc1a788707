"""timm's training pipeline without timm's ``train.py``: the stand-in ``vs_timm.py`` uses when that
file cannot be had (it is not in the timm wheel nor in its PyPI sdist, and GitHub may be out of reach).

It builds what ``train.py`` builds with its defaults, through timm's public API: ``create_dataset``
over an image folder, ``create_loader`` (``is_training=True``: RandomResizedCrop with random
interpolation, hflip, ColorJitter 0.4, decoding in ``--workers`` processes, timm's prefetcher on
CUDA), ``create_model``, ``create_optimizer_v2`` and label-smoothing cross-entropy; then a plain
loop that logs each step in ``train.py``'s format (``Train: E [i/N (p%)] ... Time: 0.876s, 73.06/s``),
so the same parser reads both. No scheduler, EMA, evaluation or checkpoints: those are outside the
timed steps of ``train.py`` too. Accepts the subset of ``train.py``'s flags that ``vs_timm.py`` passes.

    python benchmarks/timm_train_loop.py --data-dir ../shared/data/birds25-mini --model efficientnetv2_s \\
        --num-classes 25 --img-size 32 -b 64 -j 2 --epochs 1 --log-interval 1 --device cpu
"""

from __future__ import annotations

import argparse
import time

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="validation")  # accepted for train.py compatibility; unused
    p.add_argument("--model", default="efficientnetv2_s")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--img-size", type=int, required=True)
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("-j", "--workers", type=int, default=4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--opt", default="sgd")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=2e-5)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--drop-path", type=float, default=None)
    p.add_argument("--color-jitter", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--device", default="cuda")
    p.add_argument("--channels-last", action="store_true", help="NHWC model and inputs, as train.py's flag")
    # flags train.py has and vs_timm.py passes; no files are written here
    p.add_argument("--output", default="")
    p.add_argument("--experiment", default="")
    p.add_argument("--checkpoint-hist", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from timm.data import create_dataset, create_loader, resolve_data_config
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.models import create_model
    from timm.optim import create_optimizer_v2

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = create_model(args.model, num_classes=args.num_classes, drop_rate=args.drop,
                         drop_path_rate=args.drop_path).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = resolve_data_config({"input_size": (3, args.img_size, args.img_size)}, model=model)
    dataset = create_dataset("", root=args.data_dir, split=args.train_split, is_training=True)
    loader = create_loader(dataset, input_size=data["input_size"], batch_size=args.batch_size, is_training=True,
                           use_prefetcher=device.type == "cuda", color_jitter=args.color_jitter,
                           interpolation="random", mean=data["mean"], std=data["std"], num_workers=args.workers,
                           device=device)
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    model.train()
    for epoch in range(args.epochs):
        steps, last = len(loader), time.time()
        for i, (images, target) in enumerate(loader):
            images, target = images.to(device), target.to(device)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = loss.item()
            now = time.time()
            took, last = now - last, now
            if i % args.log_interval == 0 or i == steps - 1:
                print(f"Train: {epoch} [{i:>4d}/{steps} ({100.0 * i / max(steps - 1, 1):>3.0f}%)]  "
                      f"Loss: {loss_value:#.3g}  Time: {took:.3f}s, {images.shape[0] / took:>7.2f}/s", flush=True)


if __name__ == "__main__":
    main()

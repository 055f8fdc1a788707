"""Images per second: the usual per-epoch JPEG pipeline vs effv2birds' pre-resized cache.

(a) usual path: a DataLoader over the photo files, decoding every JPEG every epoch and applying
    torchvision transforms (RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize), as
    Hugging Face's image-classification example does;
(b) cached path: ``cache_split`` once (its build rate is printed too), then ``make_loader`` +
    ``BatchAugment`` (random resized crop + flip, normalised float output) every epoch.

Both produce the same kind of batch: normalised float ``(B, 3, S, S)`` tensors and labels.

    python benchmarks/data_throughput.py                        # ../shared/data/birds25-mini
    python benchmarks/data_throughput.py ~/data/birds --sizes 32 128 224 --workers 4
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from effv2birds.training.records import machine_name
from torch.utils.data import DataLoader

from effv2birds.data import BatchAugment, cache_split, load_image_dataset, make_loader

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds25-mini"


def upscaled_copy(folder: Path, size: str, dest: Path, max_images: int | None) -> Path:
    """Re-save the photos at a larger size (e.g. 1200x800, like the original Kaggle photos), so the
    usual path pays a realistic JPEG decode cost."""
    import PIL.Image

    w, h = (int(v) for v in size.lower().split("x"))
    files = sorted(p for p in folder.rglob("*.jpg"))
    per_class: dict[Path, int] = {}
    for f in files:
        if max_images and per_class.get(f.parent, 0) >= max(1, max_images // 25):
            continue
        per_class[f.parent] = per_class.get(f.parent, 0) + 1
        out = dest / f.relative_to(folder)
        out.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.open(f).convert("RGB").resize((w, h), PIL.Image.BICUBIC).save(out, quality=90)
    return dest


def usual_path(split, size: int, batch_size: int, workers: int, epochs: int) -> float:
    from torchvision import transforms as T

    tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])

    def transform(batch):
        batch["pixel_values"] = [tf(img.convert("RGB")) for img in batch["image"]]
        del batch["image"]
        return batch

    def collate(rows):
        return torch.stack([r["pixel_values"] for r in rows]), torch.tensor([r["label"] for r in rows])

    loader = DataLoader(split.with_transform(transform), batch_size=batch_size, shuffle=True,
                        num_workers=workers, collate_fn=collate, persistent_workers=workers > 0)
    return _rate(loader, lambda x, y: (x, y), epochs)


def cached_path(cached, size: int, batch_size: int, epochs: int, device: str, crop: str = "resized") -> float:
    aug = BatchAugment(cached.num_classes, mean=MEAN, std=STD, random_crop=crop, hflip=True, output_size=size)
    loader = make_loader(cached, batch_size, shuffle=True, device=device)
    return _rate(loader, aug, epochs)


def _rate(loader, step, epochs: int) -> float:
    it = iter(loader)
    step(*next(it))  # warm up (worker start, first allocations)
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x, y = step(x, y)
            n += x.shape[0]
    return n / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default=str(DEFAULT), help="a photo folder (default: %(default)s)")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 128])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, os.cpu_count() or 1],
                   help="DataLoader worker counts timed on the usual path (0: as the HF example's default)")
    p.add_argument("--num-proc", type=int, default=None, help="processes for the cache build")
    p.add_argument("--epochs", type=int, default=1, help="epochs timed on the usual path (cached: x5)")
    p.add_argument("--device", default="cpu", help="device for the cached path (cuda keeps the data there)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in the main process, both paths (default 1: on a small shared "
                        "machine extra threads mostly wait for each other; DataLoader workers use 1 each)")
    p.add_argument("--crop", default="resized", choices=["resized", "pad", "none"],
                   help="BatchAugment random_crop on the cached path (resized: the same work as the usual path)")
    p.add_argument("--photo-size", default=None,
                   help="re-save the photos at this size first, e.g. 1200x800 (the original Kaggle photos)")
    p.add_argument("--max-images", type=int, default=None, help="use at most this many training images")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not Path(args.folder).is_dir():
        print(f"folder {args.folder} not found; pass a photo folder", file=sys.stderr)
        return 2
    print(f"machine: {machine_name()}; torch {torch.__version__}; "
          f"torch threads {torch.get_num_threads()}; python {platform.python_version()}")
    folder = Path(args.folder)
    tmp = tempfile.TemporaryDirectory(prefix="effv2birds-photos-")
    if args.photo_size:
        folder = upscaled_copy(folder, args.photo_size, Path(tmp.name), args.max_images)
        print(f"photos re-saved at {args.photo_size} in {folder}")
    ds = load_image_dataset(folder, max_samples=args.max_images)
    split = ds["train"]
    print(f"data: {folder} train split, {split.num_rows} images; batch {args.batch_size}; "
          f"main process: {args.threads} torch thread(s); cached path on {args.device}, crop={args.crop}")
    usual_cols = [f"usual w={w}" for w in args.workers]
    print(f"{'size':>5} " + " ".join(f"{c:>12}" for c in usual_cols)
          + f" {'cached':>9} {'speed-up':>14} {'cache build':>12}   (images/s)")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="effv2birds-bench-") as cache_dir:
            start = time.perf_counter()
            cached = cache_split(split, size, cache_dir=cache_dir, num_proc=args.num_proc)
            build = len(cached) / (time.perf_counter() - start)
            fast = cached_path(cached, size, args.batch_size, args.epochs * 5, args.device, args.crop)
        slow = [usual_path(split, size, args.batch_size, w, args.epochs) for w in args.workers]
        ups = "/".join(f"{fast / r:.1f}" for r in slow) + "x"
        print(f"{size:>5} " + " ".join(f"{r:>12.0f}" for r in slow) + f" {fast:>9.0f} {ups:>14} {build:>12.0f}",
              flush=True)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

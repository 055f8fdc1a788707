"""make_loader (a real DataLoader that accelerate can shard/skip/seed) and BatchAugment/to_model_input."""

from __future__ import annotations

import pytest
import torch

from effv2birds.data import BatchAugment, CachedSplit, DataError, make_loader, to_model_input
from effv2birds.data.loader import TensorPairDataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _split(n=20, size=4) -> CachedSplit:
    # image i is filled with the value i, so batches can be matched to labels
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    return CachedSplit(images, torch.arange(n), [f"c{i}" for i in range(n)], size)


def _order(loader) -> list[int]:
    out = []
    for x, y in loader:
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert torch.equal(x[:, 0, 0, 0].long(), y)
        out += y.tolist()
    return out


def test_seeded_order_epochs_and_sequential():
    c = _split()
    a, b, other = (make_loader(c, 6, shuffle=True, seed=s) for s in (1, 1, 2))
    ea, eb = _order(a), _order(b)
    assert ea == eb and sorted(ea) == list(range(20)) and ea != _order(other)
    assert _order(a) != ea  # the next epoch has a new order
    assert _order(make_loader(c, 6, shuffle=False)) == list(range(20))
    assert len(make_loader(c, 6, shuffle=True, drop_last=True)) == 3


def test_batched_fetch_no_per_sample_getitem(monkeypatch):
    def boom(self, i):
        raise AssertionError("per-sample __getitem__ was used")

    monkeypatch.setattr(TensorPairDataset, "__getitem__", boom)
    assert len(_order(make_loader(_split(), 8, shuffle=True))) == 20


def test_device_option_moves_the_split_there():
    loader = make_loader(_split(), 5, shuffle=False, device="meta")  # any device other than the CPU's
    assert loader.dataset.images.device.type == "meta" and loader.dataset.labels.device.type == "meta"
    with pytest.raises(DataError, match="CachedSplit"):
        make_loader("not cached", 4, shuffle=False)
    with pytest.raises(DataError, match="batch_size"):
        make_loader(_split(), 0, shuffle=False)


def test_accelerate_prepare_skip_and_seedable_sampler():
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed

    try:
        acc = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
        set_seed(0)
        loader = acc.prepare(make_loader(_split(), 4, shuffle=True, seed=0))
        loader.set_epoch(0)
        epoch0 = [y.tolist() for _, y in loader]
        loader.set_epoch(1)
        epoch1 = [y.tolist() for _, y in loader]
        assert epoch0 != epoch1 and sorted(sum(epoch0, [])) == list(range(20))
        skipped = acc.skip_first_batches(loader, 2)
        skipped.set_epoch(0)
        assert [y.tolist() for _, y in skipped] == epoch0[2:]
        set_seed(0)
        again = acc.prepare(make_loader(_split(), 4, shuffle=True, seed=0))
        again.set_epoch(0)
        assert [y.tolist() for _, y in again] == epoch0
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def test_to_model_input_scaling_normalisation_resize_channels_last():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    plain = to_model_input(x, mean=MEAN, std=STD, normalize=False)
    assert torch.allclose(plain, x.float() / 255)
    norm = to_model_input(x, mean=MEAN, std=STD)
    assert torch.allclose(norm[:, 1], (x[:, 1].float() / 255 - MEAN[1]) / STD[1], atol=1e-6)  # float rounding
    small = to_model_input(x, mean=MEAN, std=STD, size=8, channels_last=True)
    assert small.shape == (2, 3, 8, 8) and small.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(DataError, match="uint8"):
        to_model_input(x.float(), mean=MEAN, std=STD)


def _ramp(b=8, s=32):
    x = torch.arange(s * s).view(1, 1, s, s).float() / (s * s) * 255
    return x.expand(b, 3, s, s).to(torch.uint8).contiguous()


def test_pad_crop_and_flip_are_per_sample_and_reproducible():
    x = _ramp()
    aug = BatchAugment(10, mean=MEAN, std=STD, normalize=False, random_crop="pad", crop_padding=4)
    torch.manual_seed(0)
    out, y = aug(x, torch.arange(8))
    assert out.shape == (8, 3, 32, 32) and y.tolist() == list(range(8))
    distinct = {tuple(o.flatten()[:64].tolist()) for o in out}
    assert len(distinct) > 2  # not one crop for the whole batch
    torch.manual_seed(0)
    assert torch.equal(aug(x, torch.arange(8))[0], out)
    # flip only: every output is the input or its mirror image
    flip = BatchAugment(10, mean=MEAN, std=STD, normalize=False, random_crop="none")
    got = flip(x, torch.arange(8))[0]
    ref, mirrored = x.float() / 255, x.flip(-1).float() / 255
    kinds = {bool(torch.allclose(g, mirrored[0])) for g in got if torch.allclose(g, ref[0]) or torch.allclose(g, mirrored[0])}
    assert len(kinds) == 2 and sum(torch.allclose(g, ref[0]) or torch.allclose(g, mirrored[0]) for g in got) == 8


def test_pad_crop_cpu_and_gpu_implementations_agree():
    # the CPU copies windows per sample, other devices gather them in one kernel: same crops
    from effv2birds.data.augment import _windows_batched, _windows_per_sample

    x = torch.randint(0, 256, (16, 3, 24, 20), dtype=torch.uint8)
    off = torch.randint(0, 2 * 5 + 1, (16, 2))
    flip = torch.rand(16) < 0.5
    for f in (flip, None):
        assert torch.equal(_windows_per_sample(x, 5, off, f), _windows_batched(x, 5, off, f))
        # cropping straight into floats (the CPU path without RandAugment) changes nothing but the dtype
        assert torch.equal(_windows_per_sample(x, 5, off, f, torch.float32), _windows_batched(x, 5, off, f).float())


def test_resized_crop_output_size_and_range():
    aug = BatchAugment(5, mean=MEAN, std=STD, normalize=False, random_crop="resized", crop_scale_min=0.3,
                       output_size=24)
    out, _ = aug(_ramp(), torch.zeros(8, dtype=torch.long))
    assert out.shape == (8, 3, 24, 24) and 0 <= out.min() and out.max() <= 1
    assert len({round(o.mean().item(), 4) for o in out}) > 2


@pytest.mark.parametrize("kind", ["randaugment", "trivialaugment"])
def test_auto_augment_varies_within_a_batch(kind):
    torch.manual_seed(1)
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(16, 3, 32, 32).contiguous()
    aug = BatchAugment(5, mean=MEAN, std=STD, random_crop="none", hflip=False, auto_augment=kind,
                       randaug_magnitude=15, augment_groups=None)
    out, _ = aug(x, torch.zeros(16, dtype=torch.long))
    assert len({o.sum().item() for o in out}) > 4


def test_mixup_and_cutmix_give_soft_targets():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    plain = BatchAugment(3, mean=MEAN, std=STD, random_crop="none", hflip=False)(x, labels)[0]
    for kw in ({"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}):
        torch.manual_seed(0)
        aug = BatchAugment(3, mean=MEAN, std=STD, random_crop="none", hflip=False, **kw)
        out, targets = aug(x, labels)
        assert targets.shape == (6, 3) and targets.dtype == torch.float32
        assert torch.allclose(targets.sum(1), torch.ones(6))
        # really mixed: every target has two labels (neighbours in the batch differ) and the images changed
        assert ((targets > 0).sum(1) == 2).all() and not torch.equal(out, plain)


def test_eval_mode_is_to_model_input_and_errors():
    x = _ramp(4)
    aug = BatchAugment(3, mean=MEAN, std=STD, mixup_alpha=1.0, auto_augment="randaugment").eval()
    out, y = aug(x, torch.arange(4))
    assert torch.equal(out, to_model_input(x, mean=MEAN, std=STD)) and y.dtype == torch.int64
    with pytest.raises(DataError, match="random_crop"):
        BatchAugment(3, mean=MEAN, std=STD, random_crop="zoom")
    with pytest.raises(DataError, match="auto_augment"):
        BatchAugment(3, mean=MEAN, std=STD, auto_augment="autoaugment")
    with pytest.raises(DataError, match=r"\(B, 3, H, W\)"):
        aug(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.arange(3))

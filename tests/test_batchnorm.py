"""BatchNorm statistics recomputed for a set of weights (what the EMA of the weights is evaluated with)."""

import pytest
import torch

from effv2birds.training import recompute_bn_statistics
from effv2birds.training.batchnorm import sample_images


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 5, 3), torch.nn.BatchNorm2d(5))


def test_statistics_fit_the_weights_as_they_are_now():
    net, x = _net(), torch.randn(16, 3, 8, 8)
    net.train()
    for _ in range(5):  # running statistics of the weights as they were ...
        net(x)
    with torch.no_grad():  # ... then the weights change (as an average of many steps does)
        net[0].weight.mul_(7.0)
        net[3].bias.add_(3.0)
    with torch.no_grad():
        batch_normalised = net(x)  # training mode: this batch's own statistics
    net.eval()
    assert (net(x) - batch_normalised).abs().max() > 1.0  # stale statistics: far off
    assert recompute_bn_statistics(net, [x]) == 16
    # one batch, all of it: evaluation now normalises exactly as training mode does on that batch
    # (up to BatchNorm's unbiased running variance against the biased one it normalises a batch with)
    torch.testing.assert_close(net(x), batch_normalised, atol=2e-2, rtol=2e-2)
    assert not net.training and all(m.momentum == 0.1 for m in (net[1], net[4]))


def test_each_batch_counts_equally_and_dropout_stays_off():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Dropout(0.9), torch.nn.BatchNorm1d(3))
    batches = [torch.randn(4, 3) + 1.0, torch.randn(6, 3) - 2.0]
    rng = torch.get_rng_state()
    assert recompute_bn_statistics(net, batches) == 10
    # the mean of the two batch means (not of the 10 rows), and of inputs that dropout did not touch
    expected = (batches[0].mean(0) + batches[1].mean(0)) / 2
    torch.testing.assert_close(net[1].running_mean, expected)
    torch.testing.assert_close(net[1].running_var, (batches[0].var(0) + batches[1].var(0)) / 2)
    assert torch.equal(torch.get_rng_state(), rng)  # no random numbers drawn
    assert net.training and net[0].training  # modes restored


def test_modes_of_frozen_parts_are_restored():
    net = _net()
    net[1].eval()  # e.g. a frozen backbone's layer
    recompute_bn_statistics(net, [torch.randn(4, 3, 8, 8)])
    assert net.training and not net[1].training and net[4].training


def test_no_batches_or_a_failing_pass_keeps_the_statistics():
    net = _net()
    net.train()
    net(torch.randn(8, 3, 8, 8) + 2.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="no batches"):
        recompute_bn_statistics(net, [])
    with pytest.raises(RuntimeError):  # the second batch has the wrong number of channels
        recompute_bn_statistics(net, [torch.randn(4, 3, 8, 8), torch.randn(4, 2, 8, 8)])
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.momentum == 0.1 for m in (net[1], net[4])) and net.training


def test_sample_images_is_seeded_and_leaves_the_global_random_state():
    images = torch.arange(30).view(30, 1, 1, 1)
    rng = torch.get_rng_state()
    first = torch.cat(list(sample_images(images, max_images=12, batch_size=5, seed=3))).flatten()
    assert torch.equal(torch.get_rng_state(), rng)
    again = torch.cat(list(sample_images(images, max_images=12, batch_size=5, seed=3))).flatten()
    other = torch.cat(list(sample_images(images, max_images=12, batch_size=5, seed=4))).flatten()
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert len(first) == len(set(first.tolist())) == 12
    everything = torch.cat(list(sample_images(images, max_images=100, batch_size=7, seed=0))).flatten()
    assert sorted(everything.tolist()) == list(range(30))

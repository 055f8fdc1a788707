"""Optimizers, weight-decay groups, schedules and the stopping rule (no training, fast)."""

import math

import pytest
import torch

from effv2birds import TrainConfig
from effv2birds.training import LRSchedule, build_optimizer, build_schedule, scaled_lr, should_stop_early


def _model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=True), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.LazyLinear(2))


def _net():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


@pytest.mark.parametrize("name", ["sgd", "adamw", "adam", "rmsprop"])
def test_every_optimizer_steps_and_skips_decay_on_norm_and_bias(name):
    torch.manual_seed(0)
    net = _net()
    cfg = TrainConfig(optimizer=name, lr=0.01, weight_decay=0.1)
    opt = build_optimizer(net, cfg, global_batch_size=32)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for pname, p in net.named_parameters():
        expected = 0.1 if p.ndim > 1 else 0.0  # Linear weights decay; biases and LayerNorm do not
        assert decay[id(p)] == expected, pname
    before = [p.detach().clone() for p in net.parameters()]
    loss = net(torch.randn(5, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_sgd_nesterov_and_frozen_parameters_left_out():
    net = _net()
    for p in net[0].parameters():
        p.requires_grad_(False)
    opt = build_optimizer(net, TrainConfig(optimizer="sgd", momentum=0.9, nesterov=True), global_batch_size=8)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert all(p.requires_grad for p in params) and len(params) == 4
    assert opt.param_groups[0]["nesterov"] is True
    opt = build_optimizer(net, TrainConfig(optimizer="sgd", momentum=0.0, nesterov=True), global_batch_size=8)
    assert opt.param_groups[0]["nesterov"] is False  # torch refuses nesterov without momentum


def test_linear_lr_scaling_per_256_images():
    assert scaled_lr(TrainConfig(lr=0.1, lr_scaling="linear"), 1024) == pytest.approx(0.4)
    assert scaled_lr(TrainConfig(lr=0.1, lr_scaling="none"), 1024) == pytest.approx(0.1)
    opt = build_optimizer(_net(), TrainConfig(lr=0.1, lr_scaling="linear", warmup_epochs=0), global_batch_size=128)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def _lrs(cfg, steps_per_epoch, n, metrics=None):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = build_schedule(opt, cfg, steps_per_epoch=steps_per_epoch)
    out = [opt.param_groups[0]["lr"]]
    for i in range(n):
        sched.step()
        if metrics is not None and (i + 1) % steps_per_epoch == 0:
            sched.epoch_end(metrics[(i + 1) // steps_per_epoch - 1])
        out.append(opt.param_groups[0]["lr"])
    return out, sched, opt


def test_cosine_with_warmup():
    cfg = TrainConfig(lr=1.0, schedule="cosine", warmup_epochs=1, epochs=5, min_lr_ratio=0.1)
    lrs, _, _ = _lrs(cfg, 10, 50)
    assert lrs[0] < lrs[5] < lrs[9] < 1.0  # linear warmup over the first epoch
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then decays monotonically
    assert lrs[50] == pytest.approx(0.1)  # to the floor
    assert lrs[30] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_step_schedule():
    cfg = TrainConfig(lr=1.0, schedule="step", warmup_epochs=0, step_epochs=2, step_gamma=0.5, epochs=6)
    lrs, _, _ = _lrs(cfg, 4, 24)
    assert lrs[7] == pytest.approx(1.0) and lrs[8] == pytest.approx(0.5) and lrs[16] == pytest.approx(0.25)


def test_constant_schedule_after_warmup():
    cfg = TrainConfig(lr=0.3, schedule="constant", warmup_epochs=0.5, epochs=3)
    lrs, _, _ = _lrs(cfg, 4, 12)
    assert lrs[0] < 0.3 and all(lr == pytest.approx(0.3) for lr in lrs[2:])


def test_plateau_schedule_and_exact_state_round_trip():
    cfg = TrainConfig(lr=1.0, schedule="plateau", warmup_epochs=0, plateau_patience=1, plateau_factor=0.1, epochs=8)
    accs = [0.5, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7]
    lrs, sched, _ = _lrs(cfg, 2, 16, metrics=accs)
    # improvement at epochs 1-2; epochs 3 and 4 without -> reduce after the 2nd bad epoch (patience 1)
    assert lrs[6] == pytest.approx(1.0) and lrs[8] == pytest.approx(0.1)
    # a schedule restored from state_dict continues identically
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    twin = build_schedule(opt2, cfg, steps_per_epoch=2)
    twin.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(lrs[-1])
    for acc in (0.7, 0.7):
        sched.epoch_end(acc)
        twin.epoch_end(acc)
    assert twin.get_last_lr() == sched.get_last_lr()


def test_unknown_schedule_is_a_clear_error():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="cosine, step, plateau, constant"):
        LRSchedule(opt, kind="linear", total_steps=10, warmup_steps=0, steps_per_epoch=1)


def test_stopping_rule_of_the_study():
    # the study: at most 350 epochs, at least 150, then patience 50
    rule = dict(min_epochs=150, patience=50)
    assert not should_stop_early(100, 20, **rule)  # before min_epochs nothing stops
    assert not should_stop_early(150, 120, **rule)  # 30 epochs without improvement: go on
    assert should_stop_early(170, 120, **rule)  # 50 epochs without improvement after min_epochs
    assert should_stop_early(150, 60, **rule)  # stops right at min_epochs when long stale
    assert not should_stop_early(349, 1, min_epochs=0, patience=None)  # no patience: only `epochs` caps

"""The training losses: cross-entropy and the cosine loss (TrainConfig.loss)."""

import pytest
import torch

from effv2birds import TrainConfig
from effv2birds.config import ConfigError
from effv2birds.training.losses import build_criterion, cosine_loss


def test_cosine_loss_ignores_the_length_of_the_logits():
    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    assert torch.allclose(cosine_loss(logits, labels), cosine_loss(7.5 * logits, labels))
    assert float(cosine_loss(torch.eye(5) * 3, torch.arange(5))) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_loss(-torch.eye(5), torch.arange(5))) == pytest.approx(2.0)  # pointing away


def test_cosine_loss_takes_soft_targets_and_smoothing():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 1])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    assert torch.allclose(cosine_loss(logits, labels), cosine_loss(logits, one_hot))  # mixup's form
    smoothed = one_hot * 0.9 + 0.1 / 3
    assert torch.allclose(cosine_loss(logits, labels, label_smoothing=0.1), cosine_loss(logits, smoothed))


def test_criterion_follows_the_config_and_trains():
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
    layer = torch.nn.Linear(8, 4)
    criterion = build_criterion(TrainConfig(loss="cosine").loss, label_smoothing=0.0)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    first = float(criterion(layer(x), y).detach())
    for _ in range(50):
        opt.zero_grad()
        criterion(layer(x), y).backward()
        opt.step()
    assert float(criterion(layer(x), y).detach()) < first - 0.1
    ce = build_criterion("cross_entropy", label_smoothing=0.1)
    assert torch.allclose(ce(layer(x), y), torch.nn.functional.cross_entropy(layer(x), y, label_smoothing=0.1))
    with pytest.raises(ConfigError, match="loss='focal' is not valid: choose one of 'cross_entropy', 'cosine'"):
        TrainConfig(loss="focal")


def test_a_run_trains_with_the_cosine_loss(tmp_path):
    """The trainer uses TrainConfig.loss: cosine losses lie in [0, 2], cross-entropy at the zero-initialised
    start of 25 classes is ln 25 = 3.2; validation still reports cross-entropy."""
    import json

    from effv2birds.training import train

    cfg = TrainConfig(data="synthetic", synthetic_size=50, image_size=32, batch_size=10, epochs=1, loss="cosine",
                      width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none",
                      log_every_steps=1, checkpoint_every_epochs=None, output_dir=str(tmp_path / "run"), cpu=True)
    train(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["loss"] for r in records if r["kind"] == "step"]
    assert steps and all(0.0 <= loss <= 2.0 for loss in steps), steps
    epoch = [r for r in records if r["kind"] == "epoch"][0]
    assert epoch["val_loss"] > 2.5  # cross-entropy of a barely trained 25-class model, not the cosine loss
    assert json.loads((tmp_path / "run" / "config.json").read_text())["loss"] == "cosine"

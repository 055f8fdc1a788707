"""Named recipes: sets of ``TrainConfig`` values, defined here once.

``effv2birds train --preset ours``, ``examples/reproduce.py --preset ours`` and
``resolve_config(preset="ours")`` all read this table; the TOML files in ``examples/configs/``
spell the same recipes out for reading and a test keeps them equal. A recipe may train photos of one
size differently (:data:`PHOTO_SIZE_RECIPES`). Where a preset sits in the precedence (defaults < preset
< the preset's values for the photo size < config file < flags): :func:`effv2birds.config.resolve_config`.

>>> PRESETS["ours"]["optimizer"], PRESETS["blog"]["lr"]
('adamw', 0.0001)
>>> PHOTO_SIZE_RECIPES["ours"][32], PHOTO_SIZE_RECIPES["ours"][128]["epochs"]
({'image_size': 64, 'epochs': 32}, 80)
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "BLOG", "OURS", "PHOTO_SIZE_RECIPES"]

# The study's settings: Adam 1e-4, batch 128, images only resized and scaled to [0, 1],
# up to 350 epochs (at least 150, early stop after 50 without improvement), ReduceLROnPlateau.
BLOG: dict[str, Any] = dict(
    optimizer="adam", lr=1e-4, weight_decay=0.0, batch_size=128, schedule="plateau", warmup_epochs=0.0,
    resize="resize", normalize=False, random_crop="none", hflip=False, auto_augment="none",
    label_smoothing=0.0, epochs=350, min_epochs=150, early_stop_patience=50, per_class=100,
    zero_init_residual=False,
)

# Our recipe for 100 photos per class (same data budget as the study); see docs/results.md
# for what each change bought.
OURS: dict[str, Any] = dict(
    optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=32, schedule="cosine", warmup_epochs=3.0,
    resize="resize", normalize=True, random_crop="pad", hflip=True, label_smoothing=0.1,
    stochastic_depth=0.0, zero_init_residual=True, epochs=40, per_class=100,
)

# What a recipe changes for photos of one size (a run's ``photo_size``), measured in docs/results.md (issue #13):
# our recipe feeds the study's 32x32 photos to the network at 64 px (at a 32 px input the last stages see a 1x1
# map) for 32 epochs, which fits the hour of a 2-core CPU; at 128 px it mixes the photos of each batch (mixup 0.2
# or cutmix 1.0, one per batch), which needs twice the epochs (80: under 2 hours of that CPU with bf16), and
# decays the weights ten times harder (0.5: +1.3 points of mean best validation over 3 seeds, +2.1 of test).
# examples/configs/birds32.toml and birds128.toml spell them out. ``resolve_config(preset="ours",
# overrides={"photo_size": 32})`` applies them; the study runner's new-data runs take their values except the
# epochs (their budget is the study's).
PHOTO_SIZE_RECIPES: dict[str, dict[int, dict[str, Any]]] = {"ours": {
    32: dict(image_size=64, epochs=32),
    128: dict(image_size=128, mixup_alpha=0.2, cutmix_alpha=1.0, epochs=80, weight_decay=0.5),
}}

PRESETS: dict[str, dict[str, Any]] = {
    # Every experiment end to end on the built-in synthetic birds in under 15 minutes on a 2-core CPU,
    # long enough to learn: 500 training images (20 per class), 3 epochs of 42 steps. With 100 images
    # and 12 steps per run (this preset before) every run ended at chance: the net had not learned yet
    # and its BatchNorm running statistics still lagged, so the eval-mode model gave the same logits for
    # every photo (val loss ln 25). At ~125 steps the eval-mode and batch-statistics accuracies agree.
    "quick": dict(
        data="synthetic", synthetic_size=500, batch_size=12, eval_batch_size=50, epochs=3,
        lr=2e-3, warmup_epochs=0.0, progress_bar=False, log_with="none",
        # a run takes about a minute: an interrupted one starts again (finished runs are kept) instead
        # of saving model + optimizer every epoch (up to 0.9 GB a save for all_fused)
        checkpoint_every_epochs=None,
    ),
    "blog": BLOG,
    "ours": OURS,
    # All photos, our recipe, longer.
    "full": {**OURS, "per_class": None, "epochs": 100, "batch_size": 128, "lr": 3e-3},
}

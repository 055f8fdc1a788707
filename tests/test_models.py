"""build_model, variants, heads, regularization and model facts (tiny models; one full-size check)."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models.efficientnet import FusedMBConv, MBConv

from effv2birds.models import (ModelConfigError, build_model, get_classifier, list_models, list_variants,
                               model_facts, resolve_model_name, set_regularization)
from effv2birds.models.variants import timm_arch_def, torchvision_setting

TINY = dict(depth_multiplier=0.1, width_multiplier=0.25)
MODEL_ID = {"torchvision": "torchvision/efficientnet_v2_s", "timm": "timm/efficientnetv2_s"}  # EfficientNetV2-S on each
PAIRS = [(b, v) for b in ("torchvision", "timm") for v in list_variants()]
PUBLISHED_PARAMS = 21_458_488  # torchvision's EfficientNet_V2_S_Weights meta["num_params"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_list_variants_names_the_study_variants():
    assert list_variants() == ["default", "all_mbconv", "all_fused", "half_layers", "four_stage"]
    assert "torchvision/efficientnet_v2_s" in list_models() and "timm/tf_efficientnetv2_s" in list_models()
    assert "timm/tf_efficientnetv2_s.in21k_ft_in1k" in list_models(pretrained=True)


@pytest.mark.parametrize("backend,variant", PAIRS)
def test_every_pair_trains_at_32_and_128(backend, variant):
    model = build_model(MODEL_ID[backend], variant=variant, num_classes=7, **TINY)
    model.train()
    for size in (32, 128):
        model.zero_grad()
        x = torch.randn(2, 3, size, size)
        out = model(x)
        assert out.shape == (2, 7)
        out.logsumexp(1).mean().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_tf_and_rw_timm_models_build_and_run():
    for name in ("timm/tf_efficientnetv2_s", "timm/efficientnetv2_rw_s"):
        model = build_model(name, num_classes=4, **TINY)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("variant", list_variants())
def test_backends_build_the_same_architecture(variant):
    """Same stage table through torchvision configs and timm arch-def strings -> same parameter count."""
    tv = build_model("torchvision/efficientnet_v2_s", variant=variant, num_classes=10, depth_multiplier=0.2)
    tm = build_model("timm/efficientnetv2_s", variant=variant, num_classes=10, depth_multiplier=0.2)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(tv) == count(tm)


def test_full_model_has_published_parameter_count_on_both_backends():
    tv = build_model()
    assert sum(p.numel() for p in tv.parameters()) == PUBLISHED_PARAMS
    reference = torchvision.models.efficientnet_v2_s()
    assert {k: v.shape for k, v in tv.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    tm = build_model("timm/efficientnetv2_s")
    assert sum(p.numel() for p in tm.parameters()) == PUBLISHED_PARAMS
    assert sum(p.numel() for p in timm.create_model("efficientnetv2_s").parameters()) == PUBLISHED_PARAMS


def _tv_stages(model):
    return [s for s in model.features[1:-1]]


def test_variant_structure_on_torchvision():
    half = build_model(variant="half_layers")
    assert [len(s) for s in _tv_stages(half)] == [1, 2, 2, 3, 4, 7]
    four = build_model(variant="four_stage")
    stages = _tv_stages(four)
    assert [len(s) for s in stages] == [2, 4, 6, 15]
    assert [s[0].out_channels for s in stages] == [48, 64, 128, 256]
    assert [type(s[0]) for s in stages] == [FusedMBConv, FusedMBConv, MBConv, MBConv]
    fused = build_model(variant="all_fused", depth_multiplier=0.1)
    assert all(isinstance(b, FusedMBConv) for s in _tv_stages(fused) for b in s)
    mb = build_model(variant="all_mbconv", depth_multiplier=0.1)
    assert all(isinstance(b, MBConv) for s in _tv_stages(mb) for b in s)


def test_variant_structure_on_timm():
    from timm.models._efficientnet_blocks import (ConvBnAct, DepthwiseSeparableConv, EdgeResidual,
                                                  InvertedResidual)

    half = build_model("timm/efficientnetv2_s", variant="half_layers")
    assert [len(s) for s in half.blocks] == [1, 2, 2, 3, 4, 7]
    four = build_model("timm/efficientnetv2_s", variant="four_stage")
    assert [len(s) for s in four.blocks] == [2, 4, 6, 15]
    assert [type(s[0]) for s in four.blocks] == [ConvBnAct, EdgeResidual, InvertedResidual, InvertedResidual]
    fused = build_model("timm/efficientnetv2_s", variant="all_fused", depth_multiplier=0.1)
    assert all(isinstance(b, (ConvBnAct, EdgeResidual)) for s in fused.blocks for b in s)
    mb = build_model("timm/efficientnetv2_s", variant="all_mbconv", depth_multiplier=0.1)
    assert all(isinstance(b, (InvertedResidual, DepthwiseSeparableConv)) for s in mb.blocks for b in s)
    assert timm_arch_def("default") == [
        ["cn_r2_k3_s1_e1_c24_skip"], ["er_r4_k3_s2_e4_c48"], ["er_r4_k3_s2_e4_c64"],
        ["ir_r6_k3_s2_e4_c128_se0.25"], ["ir_r9_k3_s1_e6_c160_se0.25"], ["ir_r15_k3_s2_e6_c256_se0.25"],
    ]  # the arch_def in timm's _gen_efficientnetv2_s


def test_multipliers_follow_torchvision_rounding():
    setting, last = torchvision_setting("default", width_multiplier=0.5, depth_multiplier=0.1)
    assert [c.num_layers for c in setting] == [1, 1, 1, 1, 1, 2]  # ceil(n * 0.1)
    assert [c.out_channels for c in setting] == [16, 24, 32, 64, 80, 128]  # multiples of 8, >= 90% of n*0.5
    assert last == 640
    model = build_model(num_classes=3, width_multiplier=0.5, depth_multiplier=0.1)
    assert model.features[0][0].out_channels == 16
    assert sum(len(s) for s in _tv_stages(model)) == 7
    timm_model = build_model("timm/efficientnetv2_s", num_classes=3, width_multiplier=0.5, depth_multiplier=0.1)
    assert timm_model.conv_stem.out_channels == 16 and timm_model.num_features == 640


def test_dropout_and_stochastic_depth_reach_the_model():
    tv = build_model(num_classes=3, dropout=0.4, stochastic_depth=0.3, depth_multiplier=0.1)
    assert tv.classifier[0].p == 0.4
    rates = [m.stochastic_depth.p for m in tv.modules() if isinstance(m, (MBConv, FusedMBConv))]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3 * (len(rates) - 1) / len(rates))
    tm = build_model("timm/efficientnetv2_s", num_classes=3, dropout=0.4, stochastic_depth=0.3, depth_multiplier=0.1)
    assert tm.drop_rate == 0.4
    last = [b for s in tm.blocks for b in s][-1]
    assert last.drop_path.drop_prob == pytest.approx(rates[-1])
    # None means the same default (0.2) on both backends
    assert build_model("timm/efficientnetv2_s", **TINY).drop_rate == build_model(**TINY).classifier[0].p == 0.2


def _drop_path_rates(model) -> list[float]:
    if hasattr(model, "blocks"):  # timm: nn.Identity where the rate is 0
        return [getattr(b.drop_path, "drop_prob", 0.0) for s in model.blocks for b in s]
    return [m.stochastic_depth.p for m in model.modules() if isinstance(m, (MBConv, FusedMBConv))]


@pytest.mark.parametrize("backend", ["torchvision", "timm"])
def test_set_regularization_changes_a_built_model(backend):
    model = build_model(MODEL_ID[backend], num_classes=3, stochastic_depth=0.0, dropout=0.0, depth_multiplier=0.1)
    set_regularization(model, dropout=0.5, stochastic_depth=0.4)
    rates = _drop_path_rates(model)
    assert (model.drop_rate if backend == "timm" else model.classifier[0].p) == 0.5
    n = len(rates)
    assert rates == pytest.approx([0.4 * i / n for i in range(n)])
    # a training step still works with the new drop-path modules
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    set_regularization(model, dropout=0.1)  # stochastic depth untouched
    assert _drop_path_rates(model) == pytest.approx(rates)
    with pytest.raises(ModelConfigError, match="dropout"):
        set_regularization(model, dropout=1.5)


@pytest.mark.parametrize("backend", ["torchvision", "timm"])
def test_bn_momentum_reaches_every_batchnorm_and_is_checked(backend):
    def momenta(model):
        return {m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}

    assert momenta(build_model(MODEL_ID[backend], num_classes=3, **TINY)) == {0.1}  # the backends' default
    assert momenta(build_model(MODEL_ID[backend], num_classes=3, bn_momentum=0.01, **TINY)) == {0.01}
    for bad in (0.0, 1.0, -0.1, float("nan")):  # 0 would freeze the statistics at mean 0, var 1
        with pytest.raises(ModelConfigError, match="bn_momentum"):
            build_model(MODEL_ID[backend], num_classes=3, bn_momentum=bad, **TINY)


@pytest.mark.parametrize("backend", ["torchvision", "timm"])
def test_get_classifier_is_the_trainable_head(backend):
    model = build_model(MODEL_ID[backend], num_classes=6, **TINY)
    head = get_classifier(model)
    linear = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linear) == 1 and linear[0].out_features == 6
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert linear[0].weight.grad is not None
    assert get_classifier(nn.parallel.DataParallel(model)) is head  # wrappers are looked through


@pytest.mark.parametrize("backend", ["torchvision", "timm"])
def test_one_input_channel(backend):
    model = build_model(MODEL_ID[backend], num_classes=10, in_chans=1, **TINY)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_names_and_backends_resolve():
    assert resolve_model_name().id == resolve_model_name("torchvision/efficientnet_v2_s").id
    spec = resolve_model_name("timm/tf_efficientnetv2_s.in21k_ft_in1k")
    assert (spec.backend, spec.arch, spec.tag, spec.id) == ("timm", "tf_efficientnetv2_s", "in21k_ft_in1k",
                                                            "timm/tf_efficientnetv2_s.in21k_ft_in1k")
    # old spellings keep working, each with a FutureWarning naming the new id
    for old, backend, new in [("efficientnet_v2_s", None, "torchvision/efficientnet_v2_s"),
                              ("efficientnet_v2_s", "timm", "timm/efficientnetv2_s"),
                              (None, "timm", "timm/efficientnetv2_s"),
                              ("timm:tf_efficientnetv2_s", None, "timm/tf_efficientnetv2_s"),
                              ("efficientnetv2_rw_s", None, "timm/efficientnetv2_rw_s")]:
        with pytest.warns(FutureWarning, match=f"old spelling; write model='{new}'"):
            assert resolve_model_name(old, backend).id == new
    with pytest.raises(ModelConfigError, match="is a timm model but backend='torchvision' was given"):
        resolve_model_name("timm/efficientnetv2_s", backend="torchvision")


def test_train_config_has_one_model_id_and_no_silent_backend_switch():
    from effv2birds import TrainConfig

    with pytest.warns(FutureWarning):
        old = TrainConfig(model="tf_efficientnetv2_s")  # kept backend="torchvision" before, and said so
    assert (old.model, old.backend) == ("timm/tf_efficientnetv2_s", "timm")
    assert "backend" not in old.to_dict() and TrainConfig.from_dict(old.to_dict()) == old
    with pytest.warns(FutureWarning):
        saved = TrainConfig.from_dict({"model": "efficientnet_v2_s", "backend": "timm"})  # an old config.json
    assert saved.model == "timm/efficientnetv2_s" and saved.replace(model="torchvision/efficientnet_v2_s").backend == "torchvision"
    with pytest.warns(FutureWarning, match="write model='timm/efficientnetv2_s'"):
        assert TrainConfig(backend="timm").model == "timm/efficientnetv2_s"  # the old `--backend timm` alone
    from effv2birds.cli import build_config, build_parser

    with pytest.warns(FutureWarning):
        assert build_config(build_parser().parse_args(["train", "--backend", "timm"])).backend == "timm"


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="resnet50"), "unknown model"),
    (dict(backend="keras"), "backend"),
    (dict(variant="tiny"), "all_fused"),
    (dict(name="timm/tf_efficientnetv2_s.nope"), "in21k_ft_in1k"),
    (dict(name="torchvision/efficientnet_v2_s.IMAGENET1K_V1"), "torchvision"),
    (dict(name="timm/efficientnetv2_rw_s", variant="all_fused"), "only variant='default'"),
    (dict(variant="half_layers", pretrained=True), "from scratch"),
    (dict(width_multiplier=0.5, pretrained=True), "weights=FILE"),
    (dict(dropout=1.0), "dropout"),
    (dict(stochastic_depth=-0.1), "stochastic_depth"),
    (dict(num_classes=0), "num_classes"),
    (dict(in_chans=0), "in_chans"),
    (dict(width_multiplier=0), "width_multiplier"),
])
def test_bad_combinations_raise_clear_errors(kwargs, match):
    with pytest.raises(ModelConfigError, match=match):
        build_model(**kwargs)


def test_model_facts_match_torchvision_tables():
    facts = model_facts(build_model(), 384)
    assert facts.params == PUBLISHED_PARAMS
    meta = torchvision.models.EfficientNet_V2_S_Weights.DEFAULT.meta
    assert facts.gflops == pytest.approx(meta["_ops"], abs=0.01)  # 8.366 GMACs
    small = model_facts(build_model(), 192)
    assert small.gflops == pytest.approx(facts.gflops / 4, rel=0.05)  # compute grows with pixel count


def test_model_facts_counts_trainable_and_keeps_mode():
    model = build_model(num_classes=3, in_chans=1, **TINY)
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    facts = model_facts(model, 32)
    assert model.training and facts.trainable_params == 0 and facts.in_chans == 1 and facts.gflops > 0
    with pytest.raises(ValueError, match="image_size"):
        model_facts(model, 0)


def _doc_blocks():
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "models.md"
    return re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)


def test_docs_snippets_run(tmp_path, monkeypatch):
    import warnings

    blocks = _doc_blocks()
    runnable = [b for b in blocks if "# needs:" not in b]
    assert len(runnable) >= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EFFV2BIRDS_OFFLINE", "1")
    for i, code in enumerate(runnable):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(code, f"docs/models.md block {i}", "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("backend", ["torchvision", "timm"])
def test_zero_init_residual_starts_every_block_as_identity(backend):
    from effv2birds.models import zero_init_residual_

    model = build_model(MODEL_ID[backend], num_classes=25)
    assert zero_init_residual_(model) == 35  # the same residual blocks on both backends
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), torch.zeros(2, 25))  # first loss is exactly ln(25)
    # a block's branch contributes nothing: its output equals its input
    block = next(m for m in model.modules() if getattr(m, "use_res_connect", False) or getattr(m, "has_skip", False))
    probe = torch.randn(1, 24, 16, 16)
    assert torch.allclose(block(probe), probe)
    # and the network still learns: the head gets a gradient on the first step
    model.train()
    torch.nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    linear = next(m for m in get_classifier(model).modules() if isinstance(m, nn.Linear))
    assert linear.weight.grad.abs().sum() > 0


def test_zero_init_is_not_applied_over_loaded_weights(tmp_path):
    source = build_model(num_classes=5, depth_multiplier=0.1)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = build_model(num_classes=5, depth_multiplier=0.1, weights=tmp_path / "w.pth", zero_init_residual=True)
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name

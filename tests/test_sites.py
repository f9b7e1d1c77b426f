"""Feature-site discovery on real timm architectures (random init; no weights needed)."""

import pytest
import timm
import torch
from torch import nn

from analysis.errors import SiteSelectionError
from analysis.sites import disable_inplace, find_sites, is_activation, site_stages


@pytest.mark.parametrize("arch, count, act, channels_last", [
    ("resnet50", 49, "ReLU", False),
    ("mobilenetv2_100", 35, "ReLU6", False),
    ("efficientnet_b0", 49, "SiLU", False),
    ("convnext_tiny", 18, "GELU", True),
])
def test_default_sites_are_every_activation(arch, count, act, channels_last):
    model = timm.create_model(arch)
    sites = find_sites(model)
    assert len(sites) == count
    assert {type(s.module).__name__ for s in sites} == {act}
    assert all(s.channels_last == channels_last for s in sites)
    assert all(s.nonnegative == act.startswith("ReLU") for s in sites)
    names = [n for n, _ in model.named_modules()]
    assert [s.name for s in sites] == [n for n in names if n in {s.name for s in sites}]  # module order


@pytest.mark.parametrize("arch", ["test_resnet", "test_convnext", "test_efficientnet", "test_vit"])
def test_channel_axis_matches_the_actual_feature_maps(arch):
    """The channel axis a site reports is the axis whose size equals the producing layer's width."""
    model = timm.create_model(arch).eval()
    sites = find_sites(model)
    shapes = {}
    hooks = [s.module.register_forward_hook(lambda m, a, o, n=s.name: shapes.__setitem__(n, o.shape)) for s in sites]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64) if "vit" not in arch else torch.randn(1, 3, 160, 160))
    for h in hooks:
        h.remove()
    for s in sites:
        shape = shapes[s.name]
        c = shape[s.channel_dim(len(shape))]
        if len(shape) == 4 and shape[2] != shape[3]:  # NHWC: the spatial axes are 1 and 2
            assert s.channels_last and shape[1] == shape[2]
        if s.channels_last:
            assert c == shape[-1]
        assert c > 1


def test_regex_selection_include_and_exclude():
    model = timm.create_model("resnet18")
    sites = find_sites(model, include=r"layer4\.1")
    assert [s.name for s in sites] == ["layer4.1.act1", "layer4.1.act2"]
    sites = find_sites(model, include=["layer4", "layer3"], exclude=r"act1$")
    assert [s.name for s in sites] == ["layer3.0.act2", "layer3.1.act2", "layer4.0.act2", "layer4.1.act2"]


def test_empty_selection_and_bad_regex_are_clear_errors():
    model = timm.create_model("resnet18")
    with pytest.raises(SiteSelectionError, match=r"no feature site matches include=\['layer9'\].*17 activation sites, e.g. act1"):
        find_sites(model, include="layer9")
    with pytest.raises(SiteSelectionError, match="invalid include site pattern"):
        find_sites(model, include="(")


def test_activation_detection_skips_gates_and_softmax():
    assert is_activation(nn.ReLU()) and is_activation(nn.GELU()) and is_activation(nn.SiLU())
    assert not any(is_activation(m) for m in (nn.Sigmoid(), nn.Softmax(-1), nn.Tanh(), nn.Identity(),
                                               nn.Hardsigmoid(), nn.Sequential(nn.ReLU())))


def test_disable_inplace_turns_off_timm_inplace_activations():
    model = timm.create_model("resnet18")
    sites = find_sites(model)
    assert any(s.module.inplace for s in sites)
    changed = disable_inplace(sites)
    assert changed and not any(s.module.inplace for s in sites)


def test_stages_follow_timm_feature_info():
    model = timm.create_model("mobilenetv2_100")
    stages = site_stages(model, [s.name for s in find_sites(model)])
    assert stages["bn1.act"] == "r2"
    assert stages["blocks.1.0.bn1.act"] == "r4"
    assert stages["blocks.3.0.bn1.act"] == "r16"  # blocks.3 precedes blocks.4, the r16 feature module
    assert stages["bn2.act"] == "head"
    model = timm.create_model("resnet18")
    stages = site_stages(model, [s.name for s in find_sites(model)])
    assert stages["act1"] == "r2" and stages["layer1.0.act1"] == "r4" and stages["layer4.1.act2"] == "r32"

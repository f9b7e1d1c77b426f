"""The offline pretrained weights are real and correctly mapped: they classify real photos."""

import time

import pytest
import timm
import torch
from PIL import Image
from skimage import data as photos

from sparsezoo.errors import WeightsUnavailableError
from sparsezoo.models.factory import create_model
from sparsezoo.recipe import ModelSpec

TABBY_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.mark.parametrize("arch", ["mobilenetv2_100", "tf_efficientnet_lite0"])
def test_offline_weights_classify_real_photos(arch):
    model = create_model(ModelSpec(name=arch, weights="offline")).eval()
    tf = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.no_grad():
        cat = model(tf(Image.fromarray(photos.chelsea()))[None]).softmax(-1)[0]
        coffee = model(tf(Image.fromarray(photos.coffee()))[None]).softmax(-1)[0]
    assert int(cat.argmax()) in TABBY_CATS and float(cat[list(TABBY_CATS)].sum()) > 0.8
    assert int(coffee.argmax()) == ESPRESSO and float(coffee[ESPRESSO]) > 0.9


def test_offline_weights_with_a_resized_head_keep_the_backbone():
    ref = create_model(ModelSpec(name="mobilenetv2_100", weights="offline"))
    model = create_model(ModelSpec(name="mobilenetv2_100", weights="offline"), num_classes=10)
    assert model.get_classifier().out_features == 10
    assert torch.equal(model.conv_stem.weight, ref.conv_stem.weight)


def test_pretrained_weights_without_network_fail_fast_with_a_way_forward():
    t = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as e:
        create_model(ModelSpec(name="resnet18.a1_in1k"), num_classes=10)
    assert time.perf_counter() - t < 10
    assert "--no-pretrained" in str(e.value) and "--weights FILE.safetensors" in str(e.value)
    with pytest.raises(WeightsUnavailableError, match="--weights offline"):
        create_model(ModelSpec(name="mobilenetv2_100"))


def test_weights_file_round_trip_and_mismatch(tmp_path):
    from safetensors.torch import save_file

    src = timm.create_model("test_resnet", num_classes=5)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    model = create_model(ModelSpec(name="test_resnet", weights=str(tmp_path / "w.safetensors")), num_classes=3)
    assert torch.equal(model.conv1[0].weight, src.conv1[0].weight) and model.num_classes == 3
    other = timm.create_model("resnet18")
    save_file(other.state_dict(), str(tmp_path / "r18.safetensors"))
    with pytest.raises(WeightsUnavailableError, match="do not fit this model"):
        create_model(ModelSpec(name="test_resnet", weights=str(tmp_path / "r18.safetensors")))


def test_unknown_names_and_tags_suggest_close_ones():
    from sparsezoo.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="did you mean: .*resnet50"):
        create_model(ModelSpec(name="resnet5", pretrained=False))
    with pytest.raises(ModelNotFoundError, match="no pretrained tag 'nope' for resnet50"):
        create_model(ModelSpec(name="resnet50.nope", pretrained=False))
    with pytest.raises(ModelNotFoundError, match="model folder .* not found"):
        create_model(ModelSpec(name="./no/such/folder", pretrained=False))

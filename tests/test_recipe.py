"""Recipe schema: parsing, validation with one clear message, overrides, the built-in library."""

import pytest

from sparsezoo.errors import RecipeError
from sparsezoo.recipe import Recipe, builtin_recipes, diff, load_recipe, set_value


def test_round_trip_through_yaml_keeps_every_field(tmp_path):
    r = Recipe.from_dict({"model": {"name": "resnet50.a1_in1k"},
                          "penalties": [{"kind": "l1", "lam": 1e-4, "schedule": {"warmup_epochs": 0.5}}],
                          "train": {"epochs": 3, "seed": 7}})
    path = tmp_path / "r.yaml"
    path.write_text(r.to_yaml())
    again = load_recipe(str(path))
    assert again == r
    assert again.hash() == r.hash()
    assert again.penalties[0].schedule.warmup_epochs == 0.5


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: {name: resnet18}\npenalties: [{kind: l1, lam: 1e-4}]\n")
    assert load_recipe(str(path)).penalties[0].lam == pytest.approx(1e-4)


@pytest.mark.parametrize("data, message", [
    ({"model": {"name": "x", "pretrained": "yes"}}, "recipe.model.pretrained must be true/false"),
    ({"model": {"name": "x"}, "optim": {"lrr": 1}}, "unknown key recipe.optim.lrr (did you mean 'lr'?)"),
    ({"model": {"name": "x"}, "trian": {}}, "unknown key recipe.trian (did you mean 'train'?)"),
    ({"model": {"name": "x"}, "train": {"epochs": 2.5}}, "recipe.train.epochs must be an integer"),
    ({"model": {"name": "x"}, "penalties": [{"kind": "l1", "lam": -1e-4}]}, "lam must be >= 0"),
    ({"model": {"name": "x"}, "penalties": [{"kind": "l3", "lam": 1}]}, "kind 'l3' is unknown"),
    ({"model": {"name": "x"}, "sites": {"include": ["("]}}, "invalid regex"),
    ({"model": {"name": "x"}, "optim": {"name": "lamb"}}, "recipe.optim.name must be 'adamw' | 'sgd'"),
    ({"model": {"name": "x"}, "data": {"val_fraction": 1.5}}, "val_fraction must be in (0, 1)"),
    ({"model": {}}, "recipe.model.name is required"),
    ({"model": {"name": "x"}, "penalties": [{"kind": "l1", "lam": 0, "target_zero_frac": 0.5}]}, "starting λ"),
])
def test_invalid_recipes_fail_with_one_clear_message(data, message):
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict(data)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unreadable_and_non_mapping_files_are_recipe_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="must be a YAML mapping"):
        load_recipe(str(bad))
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(str(bad))
    with pytest.raises(RecipeError, match="neither a file nor a built-in"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_builtin_recipes_load_and_validate():
    lib = builtin_recipes()
    assert {"resnet50-imagenet-l1", "convnext_tiny-imagenet-hoyer", "efficientnet_lite0-imagenet-target",
            "mobilenetv2_100-digits-demo"} <= set(lib)
    for name in lib:
        assert load_recipe(name).model.name


def test_set_value_overrides_nested_and_list_fields():
    d = Recipe.from_dict({"model": {"name": "x"}, "penalties": [{"kind": "l1", "lam": 1e-4}]}).to_dict()
    set_value(d, "optim.lr", "0.01")
    set_value(d, "penalties.0.lam", "2e-4")
    set_value(d, "sites.include", "['layer4']")
    r = Recipe.from_dict(d)
    assert r.optim.lr == 0.01 and r.penalties[0].lam == pytest.approx(2e-4) and r.sites.include == ["layer4"]
    with pytest.raises(RecipeError, match="unknown key"):
        set_value(d, "nope.lr", "1")


def test_diff_names_changed_fields():
    a = Recipe.from_dict({"model": {"name": "x"}})
    b = Recipe.from_dict({"model": {"name": "x"}, "optim": {"lr": 1e-2}})
    assert diff(a, b) == ["optim.lr: 0.001 -> 0.01"]


def test_fields_added_to_the_schema_leave_recorded_hashes_unchanged():
    """The zoo's recorded recipe hashes were made before later fields existed (staged λ stages, …): a recipe that
    does not use them keeps its hash, and one that does gets another."""
    import json
    from pathlib import Path

    from sparsezoo.zoo import registry

    recorded = json.loads((Path(__file__).resolve().parents[1] / "model_cards" / "zoo-results.json").read_text())
    reg = registry()
    for name, entry in recorded["entries"].items():
        for variant, result in entry["variants"].items():
            assert reg.entry(name).recipe_for(variant).hash() == result["recipe_hash"], (name, variant)
    base = {"model": {"name": "test_resnet"}, "penalties": [{"kind": "l1", "lam": 1e-5}]}
    staged = {**base, "penalties": [{"kind": "l1", "lam": 1e-5,
                                     "schedule": {"shape": "staged", "stages": [{"epochs": 1, "lam": 1e-4}]}}]}
    assert Recipe.from_dict(base).hash() != Recipe.from_dict(staged).hash()

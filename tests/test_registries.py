"""One registry per concept, read live: a penalty kind added with ``register_penalty``, a site kind or an
activation variant is usable from a recipe and from the finetune command line as soon as it is registered."""

import pytest
import torch
import yaml
from torch import nn

import analysis.sites
from sparsezoo.cli import main
from sparsezoo.errors import RecipeError
from sparsezoo.models.activations import ACTIVATIONS
from sparsezoo.recipe import Recipe, activation_names, penalty_kinds, site_kinds
from sparsezoo.train.penalties import PENALTIES, SparsityPenalty, register_penalty, unregister_penalty

KIND = "test_squared_l2"


@pytest.fixture
def squared_l2():
    """A penalty kind registered for one test (per sample, Σ over positions of ‖x‖₂²)."""

    @register_penalty(KIND)
    def squared_l2(a, channel_dim, nonnegative, mask=None):
        per_position = a.float().square().sum(dim=channel_dim)
        if mask is not None:
            per_position = per_position * mask
        return per_position.sum() / a.shape[0]

    yield KIND
    unregister_penalty(KIND)


def finetune_cli(capsys, *argv):
    capsys.readouterr()
    try:
        code = main(["finetune", "resnet18", *argv, "--print-recipe"])
    except SystemExit as e:  # argparse errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_registered_penalty_is_usable_from_a_recipe(squared_l2):
    recipe = Recipe.from_dict({"model": {"name": "resnet18"},
                               "penalties": [{"kind": squared_l2, "lam": 1e-3}, {"kind": "l1", "lam": 1e-4}]})
    assert [p.kind for p in recipe.penalties] == [squared_l2, "l1"]
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    # the training loop builds its penalty from the recipe's kinds the same way
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    penalty = SparsityPenalty(model, lams={p.kind: p.lam for p in recipe.penalties})
    with penalty:
        model(torch.randn(8, 3))
        assert penalty.penalty().item() > 0
    assert set(penalty.last_terms) == {squared_l2, "l1"}


def test_a_registered_penalty_is_usable_from_the_finetune_command_line(squared_l2, capsys):
    code, out, err = finetune_cli(capsys, "--penalty", f"{squared_l2}=1e-3", "--target-zero-frac", "0.5")
    assert code == 0, err
    (pen,) = yaml.safe_load(out)["penalties"]
    assert (pen["kind"], pen["lam"], pen["target_zero_frac"]) == (squared_l2, 1e-3, 0.5)

    code, out, err = finetune_cli(capsys, "--l1", "1e-4", "--set", f"penalties.0.kind={squared_l2}")
    assert code == 0, err
    assert [p["kind"] for p in yaml.safe_load(out)["penalties"]] == [squared_l2]


def test_unregistering_a_penalty_makes_it_unknown_again(capsys):
    register_penalty(KIND)(lambda a, channel_dim, nonnegative, mask=None: a.sum())
    assert KIND in penalty_kinds()
    unregister_penalty(KIND)
    assert KIND not in PENALTIES and KIND not in penalty_kinds()
    with pytest.raises(RecipeError, match=f"kind '{KIND}' is unknown \\(known: l1, hoyer_square"):
        Recipe.from_dict({"model": {"name": "resnet18"}, "penalties": [{"kind": KIND, "lam": 1.0}]})
    code, _, err = finetune_cli(capsys, "--penalty", f"{KIND}=1")
    assert code == 2 and f"argument --penalty: unknown penalty kind '{KIND}' (known: l1, hoyer_square" in err
    assert len(err.strip().splitlines()) == 1


def test_site_kinds_are_read_from_analysis_sites(monkeypatch, capsys):
    assert site_kinds() == list(analysis.sites.SITE_KINDS)
    code, _, err = finetune_cli(capsys, "--site-kinds", "extra")
    assert code == 2 and "argument --site-kinds: invalid choice: 'extra' (choose from 'activation'" in err
    monkeypatch.setattr(analysis.sites, "SITE_KINDS", (*analysis.sites.SITE_KINDS, "extra"))
    assert Recipe.from_dict({"model": {"name": "resnet18"}, "sites": {"kinds": ["extra"]}}).sites.kinds == ["extra"]
    code, out, err = finetune_cli(capsys, "--site-kinds", "activation", "extra")
    assert code == 0, err
    assert yaml.safe_load(out)["sites"]["kinds"] == ["activation", "extra"]


def test_activations_are_read_from_sparsezoo_activations(monkeypatch):
    assert activation_names() == ["relu", "relu2", "gelu", "silu", "topk:K"]
    with pytest.raises(RecipeError, match=r"'tanh' is unknown \(relu, relu2, gelu, silu or topk:K\)"):
        Recipe.from_dict({"model": {"name": "resnet18", "activation": "tanh"}})
    monkeypatch.setitem(ACTIVATIONS, "tanh", lambda site, arg: nn.Tanh())
    assert Recipe.from_dict({"model": {"name": "resnet18", "activation": "tanh"}}).model.activation == "tanh"
    assert "tanh" in activation_names()

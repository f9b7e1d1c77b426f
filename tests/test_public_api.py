"""The lazily loaded public names of ``analysis`` and ``sparsezoo`` stay what they are after every submodule has
been imported (a submodule named like a public function would replace it on the package: ``analysis.analyze``
was once a module that shadowed the function of the same name)."""

import importlib
import pkgutil

import pytest
import torch
from torch import nn

import analysis
import sparsezoo


def import_all(package) -> list[str]:
    names = []
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
    return names


@pytest.mark.parametrize("package", [analysis, sparsezoo], ids=lambda p: p.__name__)
def test_no_submodule_is_named_like_a_public_name(package):
    submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert not submodules & set(package.__all__)


@pytest.mark.parametrize("package", [analysis, sparsezoo], ids=lambda p: p.__name__)
def test_public_names_are_not_modules_after_importing_every_submodule(package):
    assert import_all(package)
    for name in package.__all__:
        obj = getattr(package, name)
        assert not isinstance(obj, type(analysis)), f"{package.__name__}.{name} is a module"


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3), nn.ReLU())


def test_every_public_analysis_name_is_callable_after_importing_every_submodule():
    import_all(analysis)
    model = tiny().eval()
    loader = [(torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,)))]
    calls = {
        "analyze": lambda f: f(model, loader, max_samples=8, ista_steps=2),
        "measure": lambda f: f(model, loader, fused=False),
        "coherence": lambda f: f(model),
        "convergence": lambda f: f(model, loader, ista_steps=2),
        "theory_margins": lambda f: f({}, {}),
        "SparsityMeter": lambda f: f(model, analysis.find_sites(model)),
        "SparsityStats": lambda f: f(),
        "find_sites": lambda f: f(model),
        "site_stages": lambda f: f(model, ["1"]),
        "summarize": lambda f: f({"1": analysis.measure(model, loader, fused=False)["per_site"]["1"]}),
        "explain": lambda f: f(model, loader, site="4", features=1, examples=1, n_steps=2, class_method=None),
    }
    assert set(calls) == set(analysis.__all__), "every public name needs a call here"
    for name, call in calls.items():
        assert call(getattr(analysis, name)) is not None, name

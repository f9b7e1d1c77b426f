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


def _unannotated(fn) -> list[str]:
    import inspect

    sig = inspect.signature(fn)
    missing = [n for n, p in sig.parameters.items()
               if n not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append("return")
    return missing


def test_the_public_api_is_annotated():
    """Every function exported by sparsezoo, analysis and analysis.dsc, and every public method of an exported class,
    has annotated parameters and return (what IDEs and mypy show a user; the packages ship py.typed)."""
    import importlib
    import inspect

    gaps = []
    for package in ("sparsezoo", "analysis", "analysis.dsc"):
        mod = importlib.import_module(package)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                gaps += [f"{package}.{name}: {m}" for m in _unannotated(obj)]
            elif inspect.isclass(obj) and obj.__module__.split(".")[0] in ("sparsezoo", "analysis"):
                for meth_name, meth in vars(obj).items():
                    if inspect.isfunction(meth) and (meth_name == "__init__" or not meth_name.startswith("_")):
                        gaps += [f"{package}.{name}.{meth_name}: {m}" for m in _unannotated(meth)]
    assert not gaps, gaps

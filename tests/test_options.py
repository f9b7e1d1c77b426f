"""Typed options of the analysis entry points: the keyword form (a TypedDict, for type checkers) and the options
dataclass name the same settings with the same types; an options object and keyword arguments give the same
result; an unknown keyword is refused; and the analysis, report and explain code has no function with more than 6
parameters (settings travel as one typed object)."""

import ast
import dataclasses
import typing
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis.interpret import ExplainOptions, explain
from analysis.interpret.attribute import AttributionSettings, ClassAttribution, ClassSettings, FeatureAttribution
from analysis.interpret.steps import ExplainSettings
from analysis.pipeline import AnalyzeOptions, AnalyzeSettings, MeasureOptions, MeasureSettings, analyze, measure

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("settings, options, skip", [
    (MeasureSettings, MeasureOptions, ()),
    (AnalyzeSettings, AnalyzeOptions, ()),
    (ExplainSettings, ExplainOptions, ()),
    (AttributionSettings, FeatureAttribution, ("model", "site", "method", "layer")),  # given positionally
    (ClassSettings, ClassAttribution, ("model",)),
])
def test_keyword_settings_name_the_options_fields(settings, options, skip):
    hints = typing.get_type_hints(options)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(options) if f.name not in skip}
    keywords = typing.get_type_hints(settings)
    assert keywords == fields and list(keywords) == list(fields)  # the same names, types and order
    assert not settings.__required_keys__  # every keyword is optional: the options have defaults


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    loader = [(torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))) for _ in range(2)]
    return model, loader


def without_timing(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "timing"}


def test_an_options_object_and_keywords_give_the_same_analysis():
    model, loader = tiny()
    kw = dict(max_samples=12, cka=False, ista_samples=2, ista_steps=2, fused=False, num_classes=3)
    by_keywords = analyze(model, loader, **kw)
    by_options = analyze(model, loader, AnalyzeOptions(**kw))
    overridden = analyze(model, loader, AnalyzeOptions(**{**kw, "max_samples": 4}), max_samples=12)
    assert by_keywords["samples"] == 12 and by_keywords["convergence"]["cka"] is None
    assert repr(without_timing(by_options)) == repr(without_timing(by_keywords))
    assert repr(without_timing(overridden)) == repr(without_timing(by_keywords))
    assert list(by_keywords["timing"]) == ["coherence_s", "data_pass_s", "ista_s"]
    weights = analyze(model)
    assert list(weights) == ["model", "coherence", "timing"] and list(weights["timing"]) == ["coherence_s"]
    assert repr(measure(model, loader, None, MeasureOptions(fused=False, max_samples=8))) == repr(
        measure(model, loader, fused=False, max_samples=8))


def test_an_options_object_and_keywords_give_the_same_explanation():
    model, loader = tiny()
    kw = dict(features=2, examples=2, n_steps=4, class_method=None)
    a = explain(model, loader, site="1", **kw)
    b = explain(model, loader, ExplainOptions(**kw), site="1")
    assert list(a["timing"]) == ["scan_s", "fetch_s", "feature_attributions_s", "class_attributions_s"]
    for res in (a, b):
        res.pop("timing")
    assert repr(a) == repr(b)


def test_an_unknown_setting_is_refused():
    model, loader = tiny()
    with pytest.raises(TypeError, match="max_sample"):
        analyze(model, loader, max_sample=8)
    with pytest.raises(TypeError, match="sample"):
        explain(model, loader, site="1", sample=8)


def parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    return len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)


def test_no_function_of_the_analysis_and_report_code_has_more_than_6_parameters():
    paths = [ROOT / "analysis" / "pipeline.py", *sorted((ROOT / "analysis" / "interpret").glob("*.py")),
             *sorted((ROOT / "analysis" / "report").glob("*.py")),
             *[ROOT / "sparsezoo" / "cli" / f for f in ("_report.py", "analyze.py", "explain.py")]]
    wide = [f"{p.relative_to(ROOT)}::{node.name} ({parameters(node)})" for p in paths
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and parameters(node) > 6]
    assert wide == []

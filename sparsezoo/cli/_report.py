"""The one path of the measuring commands (``sparsezoo analyze``, ``sparsezoo explain``): check the output folder,
load the model(s) and the samples, and write ``report.json`` + ``report.html`` into it atomically.

Both commands call :func:`report_folder` first (before anything heavy is imported, so a bad ``--out`` fails at
once), then :func:`load_inputs`, measure, and :func:`save_report`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsezoo.cli._options import data_spec, load_models


@dataclass
class ReportInputs:
    """The models of a report (the subject, then the ``--compare`` baseline) and the samples they all see."""

    labels: list[str]  # how the report names each model
    models: list[Any]  # sparsezoo.data.inputs.LoadedModel
    device: str
    progress: bool
    command: str  # the command line that makes the report
    samples: Any = None  # sparsezoo.data.inputs.Samples, or None (weights only)


def report_folder(args: argparse.Namespace, suffix: str = "") -> Path:
    """``--out``, or ``reports/<model><suffix>``; refused when it exists without ``--force``."""
    from sparsezoo.io import check_output_folder

    out = Path(args.out or Path("reports") / f"{Path(args.model.removeprefix('hf-hub:')).name}{suffix}")
    check_output_folder(out, args.force)
    return out


def model_label(name: str) -> str:
    """A folder's name, or the model name as typed."""
    return Path(name).name if Path(name).exists() else name


def load_inputs(args: argparse.Namespace, with_data: bool = True) -> ReportInputs:
    """The model (and ``--compare``'s), on the GPU when there is one, and the first ``--samples`` samples of
    ``--data`` preprocessed for the first model (both models see the same inputs)."""
    import torch

    from sparsezoo.data.inputs import sample_loader

    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = [args.model] + ([args.compare] if args.compare else [])
    models = load_models(args, device)
    samples = sample_loader(models[0], data_spec(args), args.samples, args.batch_size) if with_data else None
    command = "sparsezoo " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
    return ReportInputs([model_label(n) for n in names], models, device, sys.stderr.isatty(), command, samples)


def save_report(out: Path, doc: dict, page: str) -> None:
    """``out/report.json`` and ``out/report.html``, written together (a temporary folder, then a rename)."""
    from sparsezoo.io import atomic_dir, atomic_write_json, atomic_write_text

    def fill(tmp: Path) -> None:
        atomic_write_json(tmp / "report.json", doc)
        atomic_write_text(tmp / "report.html", page)

    atomic_dir(out, fill)

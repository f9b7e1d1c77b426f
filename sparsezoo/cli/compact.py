"""Remove, exactly, the units of a fine-tuned model that never fire on its training data: a smaller model with the
same logits, saved for sparsezoo.load and for ONNX Runtime.

A unit (a CNN channel, a transformer FFN neuron) is dead when its activation is exactly 0 at every position of every
training sample (evaluation transforms). Dead units are removed where that is exact: the producer's output channel
(with its BatchNorm entries) and the consumer's input channel; an FFN's up-projection rows and down-projection
columns; the whole expand -> depthwise -> project chain of an inverted residual. Dead units that cannot be removed
exactly (they feed a residual add, a depthwise conv that still fires, a squeeze-excite unit, a layer no rule covers)
are kept and counted by reason. Both models then run on the validation and test splits: the largest logit
difference (relative to the largest |logit|; exact means <= 1e-5) and the number of removed units that fire there
are printed and saved (a unit dead on training data may fire on other data; the logits then differ).

DIR gets model.safetensors + config.json (+ tokenizer files, recipe.yaml) that sparsezoo.load(DIR) reads,
model.onnx checked in ONNX Runtime, and compaction.json (widths, what was removed and kept, the verification).
A run with nothing to remove writes nothing.

examples:
  sparsezoo compact runs/mnv2-l1 --out runs/mnv2-l1-compact
  python -c "import sparsezoo; print(sparsezoo.load('runs/mnv2-l1-compact').model)"
"""

from __future__ import annotations

import argparse
from typing import Any

from sparsezoo.cli._options import positive_int

HELP = "remove never-firing units exactly (same logits) and save for sparsezoo.load and ONNX Runtime"
RUNS_MODELS = True
SPLITS = ("validation", "test")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("run_dir", metavar="RUN", help="a finished run folder (sparsezoo finetune --out)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the compacted model")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.add_argument("--batch-size", type=positive_int, default=64, help="evaluation batch size (default 64)")
    p.add_argument("--max-train-samples", type=positive_int, default=None, metavar="N",
                   help="find dead units on the first N training samples only (default: all; fewer samples call "
                        "more units dead, and more of them may fire elsewhere)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export (model.onnx)")


def _load(args: argparse.Namespace):
    """The run (checked), its model with any hard thresholds restored, and the output folder (checked)."""
    from sparsezoo.data.inputs import load_model
    from sparsezoo.hub.cards import read_run
    from sparsezoo.io import check_output_folder
    from sparsezoo.models.thresholds import restore_thresholds

    info = read_run(args.run_dir)
    out = check_output_folder(args.out, args.force)
    loaded = load_model(str(info.path))
    restore_thresholds(loaded.model, info.path)
    return info, loaded, out


def _verify(info, loaded, new, report, batch_size: int) -> tuple[list, list[str]]:
    """The verification on each split the data has, and the splits it lacks."""
    from sparsezoo.data.inputs import split_loader
    from sparsezoo.errors import DataError
    from sparsezoo.models.compaction import verify

    checks, missing = [], []
    for split in SPLITS:
        try:
            samples = split_loader(loaded, info.recipe.data, split, batch_size)
        except DataError:
            missing.append(split)
            continue
        checks.append(verify(loaded.model, new, samples.loader, report, split))
    return checks, missing


def _write(args: argparse.Namespace, out, info, new, doc: dict[str, Any], held_out) -> dict | None:
    """Fill ``out`` atomically: model.onnx checked in ONNX Runtime on the ``held_out`` batches (the export traces the
    first), then the widths-aware save with compaction.json."""
    from pathlib import Path

    from sparsezoo.io import atomic_dir
    from sparsezoo.models.compaction import save_compacted

    result: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        if not args.no_onnx:
            from sparsezoo.models.onnx_export import check_onnx, export_onnx

            export_onnx(new, next(iter(held_out)), tmp / "model.onnx")
            result.update(file="model.onnx", **check_onnx(tmp / "model.onnx", new, held_out).to_json())
        extra = {"verification": doc["verification"], **({"onnx": result} if result else {})}
        save_compacted(tmp, new, doc["report"], info.path, extra)

    atomic_dir(out, fill)
    return result or None


def _summary(report, checks: list, missing: list[str], onnx: dict | None) -> list[str]:
    lines = [f"removed {report.removed_units} units (channels, FFN neurons) that are zero at every position of "
             f"{report.samples} training samples; parameters {report.params_before:,} -> {report.params_after:,} "
             f"({report.params_after / max(report.params_before, 1):.1%})"]
    kept = report.kept
    removed_at_sites = sum(s.removed for s in report.sites)
    lines.append(f"dead units summed over activation sites: {report.dead_units} ({removed_at_sites} removed, "
                 f"{sum(kept.values())} dead but kept{': ' if kept else ''}"
                 + ", ".join(f"{n} {reason}" for reason, n in kept.items()) + ")")
    for c in checks:
        state = "exact" if c.exact else f"NOT exact (tolerance {c.tolerance:g})"
        lines.append(f"{c.split}: {c.samples} samples, max |Δlogit| {c.max_abs_diff:.3g} = {c.rel_diff:.2g} of "
                     f"max |logit| ({state}); top-1 agreement {c.top1_agreement:.2%}; removed units that fire here: "
                     f"{c.removed_fired}")
    lines += [f"{split}: the data has no {split} split, not verified" for split in missing]
    if onnx:
        state = "match" if onnx["ok"] else f"DIFFER beyond {onnx['tolerance']:g}"
        lines.append(f"ONNX Runtime vs PyTorch ({onnx['samples']} samples): max |Δlogit| {onnx['max_abs_diff']:.3g} "
                     f"= {onnx['rel_diff']:.2g} of max |logit| ({state})")
    return lines


def run(args: argparse.Namespace) -> int:
    from sparsezoo.data.inputs import split_loader
    from sparsezoo.models.compaction import compact, find_dead_units

    info, loaded, out = _load(args)
    train = split_loader(loaded, info.recipe.data, "train", args.batch_size, args.max_train_samples)
    dead = find_dead_units(loaded.model, train.loader)
    new, report = compact(loaded.model, dead)
    if report.removed_units == 0:
        why = f"; {report.dead_units} dead but kept ({', '.join(report.kept)})" if report.dead_units else ""
        print(f"nothing to remove in {info.path}: no unit that can be removed exactly is dead on "
              f"{report.samples} training samples{why}; wrote nothing")
        return 0
    checks, missing = _verify(info, loaded, new, report, args.batch_size)
    held_out = split_loader(loaded, info.recipe.data, "test" if "test" not in missing else "validation",
                            args.batch_size)
    doc = {"report": report, "verification": {c.split: c.to_json() for c in checks}}
    onnx = _write(args, out, info, new, doc, held_out.loader)
    for line in _summary(report, checks, missing, onnx):
        print(line)
    print(f"wrote {out} (sparsezoo.load('{out}'){', model.onnx' if onnx else ''}, compaction.json)")
    return 0

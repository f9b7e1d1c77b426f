"""The README's theory-margin table: the offline ImageNet MobileNetV2 / EfficientNet-Lite0 analyzed on digits.

    python benchmarks/margins_offline.py             # prints the JSON, about 1 min on CPU (--out PATH: writes it there)
    python benchmarks/margins_offline.py --record    # replaces the recorded benchmarks/results/margins-offline.json

Runs ``sparsezoo analyze MODEL --weights offline --data digits --img-size N --samples 512`` for each row and keeps the
numbers the README quotes: layers followed by an activation, how many are inside the uniqueness regime, the factor
outside (min / median / max), the median s*, the mean local coherence and the zero atoms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import add_output_options, emit, output_path

ROWS = [("mobilenetv2_100", 64), ("tf_efficientnet_lite0", 64), ("tf_efficientnet_lite0", 96)]
RECORD = "margins-offline.json"  # the recorded figures (--record)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_options(p, RECORD)
    return p.parse_args(argv)


def target(args: argparse.Namespace) -> Path | None:
    """The JSON file to write (None: stdout)."""
    return output_path(args, RECORD)


def main(argv: list[str] | None = None) -> int:
    path = target(parse_args(argv))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sparsezoo.cli import main as cli

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model, size in ROWS:
            argv = ["-q", "analyze", model, "--weights", "offline", "--data", "digits", "--img-size", str(size),
                    "--samples", "512", "--out", f"{tmp}/{model}-{size}"]
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
                code = cli(argv)
            if code != 0:
                return 1
            m = json.loads(Path(f"{tmp}/{model}-{size}/report.json").read_text())["models"][0]
            act = [v for v in m["analysis"]["margins"].values() if v["code"] == "activation" and v["factor"] is not None]
            factors = sorted(v["factor"] for v in act)
            out[f"{model}@{size}"] = {
                "command": "sparsezoo " + " ".join(argv[1:-2]),
                "layers_measured": len(act), "layers_inside": sum(1 for v in act if v["inside"]),
                "factor_min": factors[0], "factor_median": statistics.median(factors), "factor_max": factors[-1],
                "s_star_median": statistics.median(v["s_star"] for v in act),
                "mu_local_mean": m["headline"]["mu_local_mean"],
                "zero_atoms": sum(c["local"]["zero_atoms"] for c in m["analysis"]["coherence"].values()),
            }
    emit(out, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

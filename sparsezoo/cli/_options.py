"""Command-line option types (validators every command shares) and the options of the measuring commands
(``analyze``, ``explain``)."""

from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from e
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def positive_float(text: str) -> float:
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def lam_stage(text: str) -> tuple[float, float]:
    """``EPOCHS:LAM`` of one stage of a staged λ schedule (epochs > 0, λ >= 0)."""
    epochs, sep, lam = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expects EPOCHS:LAM (e.g. 1:3e-4), got {text}")
    e, v = finite_float(epochs), nonneg_float(lam)
    if e <= 0:
        raise argparse.ArgumentTypeError(f"a stage lasts > 0 epochs, got {epochs}")
    return e, v


def fraction(text: str) -> float:
    v = nonneg_float(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return v


def recovery_fraction(text: str) -> float:
    """A recovery target R in (0, 1]: 1 asks for the reference's top-1 exactly, 0 would ask for nothing."""
    v = nonneg_float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def unit_interval(text: str) -> float:
    v = nonneg_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from e
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


def site_kind(text: str) -> str:
    """A kind of feature site of the live registry :data:`analysis.sites.SITE_KINDS` (read only when the flag is
    given, so ``--help`` imports nothing heavy)."""
    from sparsezoo.recipe import site_kinds

    kinds = site_kinds()
    if text not in kinds:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(map(repr, kinds))})")
    return text


def penalty_setting(text: str) -> tuple[str, float]:
    """``KIND=λ``: a kind of the live penalty registry :data:`sparsezoo.train.penalties.PENALTIES` (built-in or added
    with :func:`~sparsezoo.train.penalties.register_penalty`) and its λ >= 0."""
    from sparsezoo.recipe import penalty_kinds

    kind, sep, lam = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KIND=λ, e.g. l1=1e-4, got {text!r}")
    known = penalty_kinds()
    if kind not in known:
        raise argparse.ArgumentTypeError(f"unknown penalty kind {kind!r} (known: {', '.join(known)})")
    return kind, nonneg_float(lam)



def add_model_options(p: argparse.ArgumentParser, compare_help: str) -> None:
    p.add_argument("--weights", help="FILE.safetensors, or 'offline' (weights shipped in an installed package)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random initialization")
    p.add_argument("--compare", metavar="MODEL", help=compare_help)
    p.add_argument("--compare-weights", help="--weights for the --compare model")
    p.add_argument("--task", choices=["auto", "image-classification", "text-classification"], default="auto",
                   help="for transformers models (default: detected)")


def add_data_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--data", required=required, default=None,
                   help="digits | image folder | saved dataset | .csv/.jsonl | Hub dataset id")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--text-column")
    p.add_argument("--text-pair-column")
    p.add_argument("--max-length", type=positive_int, default=128, help="tokens per text (default 128)")
    p.add_argument("--img-size", type=positive_int, help="input size (default: the model's data config)")


def data_spec(args: argparse.Namespace):
    from sparsezoo.recipe import DataSpec

    return DataSpec(source=args.data, image_column=args.image_column, label_column=args.label_column,
                    img_size=args.img_size, text_column=args.text_column, text_pair_column=args.text_pair_column,
                    max_length=args.max_length)


def load_models(args: argparse.Namespace, device: str) -> list:
    """The model and, with --compare, the second one (each a :class:`sparsezoo.data.inputs.LoadedModel`)."""
    from sparsezoo.data.inputs import load_model

    specs = [(args.model, args.weights)] + ([(args.compare, args.compare_weights)] if args.compare else [])
    return [load_model(n, w, args.pretrained, args.task, device) for n, w in specs]

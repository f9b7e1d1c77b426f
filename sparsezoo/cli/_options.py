"""Command-line options shared by the measuring commands (``analyze``, ``explain``)."""

from __future__ import annotations

import argparse

from sparsezoo.cli.finetune import positive_int


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
    """The model and, with --compare, the second one (each a :class:`sparsezoo.inputs.LoadedModel`)."""
    from sparsezoo.inputs import load_model

    specs = [(args.model, args.weights)] + ([(args.compare, args.compare_weights)] if args.compare else [])
    return [load_model(n, w, args.pretrained, args.task, device) for n, w in specs]

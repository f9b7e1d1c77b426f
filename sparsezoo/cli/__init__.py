"""The ``sparsezoo`` command: a thin layer that parses, calls library functions and prints.

Each sub-command is a module of this package with ``HELP``, ``add_arguments(parser)`` and ``run(args)``, and
``RUNS_MODELS`` if it runs models batch after batch: True, or a function of the parsed arguments
(``argparse.Namespace``) that says whether this invocation does (``zoo build`` does, ``zoo list`` does not); see
:func:`runs_models`. They import heavy libraries (torch, timm, …) only inside ``run``, so ``sparsezoo --help``
stays fast. Errors a user can cause end in one line on stderr and exit code 2.

Process-wide state belongs to the command, not to the library: library code leaves logging, progress bars and
matplotlib's backend alone, and the CLI sets them (:func:`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from importlib import import_module

from sparsezoo import __version__

COMMANDS = {
    "finetune": "sparsezoo.cli.finetune",
    "demo": "sparsezoo.cli.demo",
    "analyze": "sparsezoo.cli.analyze",
    "push": "sparsezoo.cli.push",
    "pull": "sparsezoo.cli.pull",
    "list": "sparsezoo.cli.list_models",
    "card": "sparsezoo.cli.card",
    "explain": "sparsezoo.cli.explain",
    "dsc": "sparsezoo.cli.dsc",
    "zoo": "sparsezoo.cli.zoo",
    "compact": "sparsezoo.cli.compact",
}


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (``sparsezoo finetune: error: …``), exit code 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse takes "-1e-4" for an option; read it as a (negative) number, so that
        # "--l1 -1e-4" is reported as "must be >= 0" rather than "expected one argument"
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> Parser:
    parser = Parser(prog="sparsezoo", description="Sparse features in deep networks: fine-tune, analyze, share.")
    parser.add_argument("--version", action="version", version=f"sparsezoo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, path in COMMANDS.items():
        mod = import_module(path)
        p = sub.add_parser(name, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run, runs_models=getattr(mod, "RUNS_MODELS", False))
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    for name in ("sparsezoo", "analysis"):
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.handlers = [handler]  # replace, so repeated main() calls in one process do not stack handlers
        lg.propagate = False
    # torch.compile's C++ toolchain check warns "No CUDA runtime is found" on every CPU-only machine
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.DEBUG if verbose else logging.ERROR)


def _one_line(e: Exception) -> str:
    """The message of ``e`` on one line. An error raised in a DataLoader worker comes back wrapped in a
    multi-line "Caught X in DataLoader worker … Original Traceback …" text whose last line is the original."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback" in str(e):
        return lines[-1].split(": ", 1)[-1]
    return " ".join(line.strip() for line in lines)


def _cause(e: BaseException, verbose: bool) -> None:
    """With ``-v``, the whole chain (the error, what caused it, their tracebacks) before the one-line message."""
    if verbose:
        import traceback

        traceback.print_exception(e, file=sys.stderr)


def runs_models(args: argparse.Namespace) -> bool:
    """Whether the parsed command runs models batch after batch: its module's ``RUNS_MODELS``, a bool or a function
    of the parsed arguments (absent: False)."""
    flag = args.runs_models
    return bool(flag(args) if callable(flag) else flag)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """While a command that runs models runs: transformers logs errors only (unless ``TRANSFORMERS_VERBOSITY`` says
    otherwise) and shows no progress bars (its switch also turns off huggingface_hub's), nor does datasets; the
    command's stderr carries our lines. All three are put back as they were afterwards, so that a ``main([...])``
    call from Python leaves its process as it found it. Imported here, after parsing: ``--help`` stays light."""
    import datasets
    import huggingface_hub.utils as hub
    from transformers.utils import logging as tf_logging

    verbosity, tf_bars = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
    hub_bars, ds_bars = not hub.are_progress_bars_disabled(), datasets.is_progress_bar_enabled()
    if not os.environ.get("TRANSFORMERS_VERBOSITY"):
        tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    if ds_bars:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        tf_logging.set_verbosity(verbosity)
        if tf_bars:
            tf_logging.enable_progress_bar()
        if hub.are_progress_bars_disabled() == hub_bars:  # changed with transformers' switch: put back
            (hub.enable_progress_bars if hub_bars else hub.disable_progress_bars)()
        if ds_bars:
            datasets.enable_progress_bars()


def _process_settings(models: bool) -> None:
    """Settings for a process that is this one command (the console script, ``python -m sparsezoo``), kept until it
    exits: matplotlib draws with Agg (``MPLBACKEND``, read when matplotlib is first imported; a user's own setting
    wins) and, for a command that runs models, freed tensor memory stays in the process
    (:func:`analysis.runtime.retain_freed_memory`, one-way)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    if models:
        from analysis.runtime import retain_freed_memory

        retain_freed_memory()


def main(argv: list[str] | None = None) -> int:
    """The ``sparsezoo`` command; returns its exit code.

    ``argv`` None: this process's command line. The process is then the command (the console script and
    ``python -m sparsezoo`` call it so) and gets the process-wide settings of :func:`_process_settings`. A list: a
    call from Python (tests, a notebook), which leaves the allocator and matplotlib alone; in both, third-party
    logging and progress bars are quieted only while the command runs (:func:`_quiet_libraries`).
    """
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # for reports: the command that made them
    _setup_logging(args.verbose, args.quiet)
    models = runs_models(args)
    if argv is None:
        _process_settings(models)
    with _quiet_libraries() if models else contextlib.nullcontext():
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """``args.run(args)``, with the errors a user can cause as one line on stderr and an exit code."""
    from analysis.errors import AnalysisError
    from sparsezoo.errors import SparsezooError

    try:
        return int(args.run(args) or 0)
    except (SparsezooError, AnalysisError) as e:
        _cause(e, args.verbose)
        print(f"sparsezoo {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except BrokenPipeError:  # `sparsezoo zoo list | head`: the reader has gone, nothing to report
        sys.stderr.close()
        return 141
    except OSError as e:  # disk full, permission denied, a path that is a file, … (after our own checks)
        _cause(e, args.verbose)
        where = f" {e.filename}" if e.filename else ""
        print(f"sparsezoo {args.command}: error: cannot access{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparsezoo {args.command}: interrupted", file=sys.stderr)
        return 130

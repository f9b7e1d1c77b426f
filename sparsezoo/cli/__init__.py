"""The ``sparsezoo`` command: a thin layer that parses, calls library functions and prints.

Each sub-command is a module of this package with ``HELP``, ``add_arguments(parser)`` and ``run(args)``, and
``RUNS_MODELS = True`` if it runs models batch after batch (then freed tensor memory is kept in the process,
:func:`analysis.runtime.retain_freed_memory`); they import heavy libraries (torch, timm, …) only inside
``run``, so ``sparsezoo --help`` stays fast.
Errors a user can cause end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
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


def main(argv: list[str] | None = None) -> int:
    from analysis.errors import AnalysisError
    from sparsezoo.errors import SparsezooError

    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # for reports: the command that made them
    _setup_logging(args.verbose, args.quiet)
    if args.runs_models:
        from analysis.runtime import retain_freed_memory

        retain_freed_memory()
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

"""The README stays true: CI runs its test command, and its example commands parse."""

import re
import shlex
from pathlib import Path

import pytest

from sparsezoo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    test_cmd = next(line for line in README.splitlines() if line.startswith("python3 -m venv") and "pytest" in line)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
    demo_cmd = next(line for line in README.splitlines() if line.startswith("python3 -m venv") and " demo " in line)
    assert "--no-deps -r .ci/offline-packages.txt" in demo_cmd and "--no-deps -r .ci/offline-packages.txt" in test_cmd


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    cmds = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if "sparsezoo " in line and not line.startswith("#"):
                argv = shlex.split(line[line.index("sparsezoo ") + len("sparsezoo "):])
                cmds.append(argv)
    return cmds


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_sparsezoo_commands_parse(argv):
    from sparsezoo.cli import COMMANDS

    assert argv[0] in COMMANDS, f"README uses an unknown command: {argv[0]}"
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]
    if argv[0] == "finetune":
        from sparsezoo.cli.finetune import recipe_from_args

        if args.recipe and not Path(args.recipe).exists() or args.resume:
            return  # refers to a run folder made by an earlier command
        recipe_from_args(args)

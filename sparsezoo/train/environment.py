"""What a run records of the machine it ran on (``metrics.json`` ``environment``): library versions, device, CPU model."""

from __future__ import annotations

import platform


def environment(accelerator, precision: str) -> dict:
    import timm
    import torch
    import transformers

    return {"torch": torch.__version__, "timm": timm.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(),
            "device": str(accelerator.device), "cpu": cpu_model(), "processes": accelerator.num_processes,
            "precision": precision}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else :func:`platform.processor`): trained numbers move across CPU
    types, so every run records it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

"""Shared helpers for the benchmark scripts (run as `python benchmarks/NAME.py`)."""

import os
import platform

import jax


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or what platform knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """One line describing the machine: CPU model, cores, OS, python, jax and its backend."""
    return (f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"python {platform.python_version()}, jax {jax.__version__} on {jax.default_backend()}")

"""Shared helpers for the benchmark scripts (run as `python benchmarks/NAME.py`)."""

import os
import platform

import jax


def machine() -> str:
    """One line describing the machine: CPU model, cores, OS, python, jax and its backend."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"python {platform.python_version()}, jax {jax.__version__} on {jax.default_backend()}")

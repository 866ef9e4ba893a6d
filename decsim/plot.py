"""matplotlib figures from History objects and study tables. matplotlib is imported lazily, inside
each function, so ``import decsim`` never imports it. Every function returns a Figure."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _pyplot():
    import matplotlib.pyplot as plt  # headless machines fall back to the Agg backend by themselves

    return plt


def _label(hist) -> str:
    c = hist.config
    return f"{c.get('algorithm', '?')} · {c.get('topology', '?')}"


def convergence(histories: Sequence, *, x: str = "steps", y: str = "loss", labels=None,
                logx: bool = False, logy: bool = True, subtract: Optional[float] = None, ax=None,
                title: Optional[str] = None):
    """Curves of metric ``y`` against ``x`` (``"steps"``, ``"grad_evals"``, ``"comm_rounds"``,
    ``"bits"``), the mean over seeds with a band from the minimum to the maximum.

    Args:
      histories: History objects (single or batched seeds).
      subtract: subtract a constant from y (e.g. ``f*`` to plot suboptimality).
    """
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.4, 4.2))
    ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
    labels = labels or [_label(h) for h in histories]
    for hist, label in zip(histories, labels):
        xs = np.asarray(hist.steps if x == "steps" else hist.metrics[x], dtype=np.float64)
        ys = np.atleast_2d(np.asarray(hist.metrics[y], dtype=np.float64))
        if subtract is not None:
            ys = ys - subtract
        xs = np.atleast_2d(xs)[0]
        mean = np.nanmean(ys, axis=0)
        (line,) = ax.plot(xs, mean, label=label)
        if ys.shape[0] > 1:
            ax.fill_between(xs, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=line.get_color(),
                            alpha=0.2, linewidth=0)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " ") + (" − ref" if subtract is not None else ""))
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def speedup(table, *, ax=None, title: Optional[str] = None):
    """Measured speedup against n, one line per topology, with the ideal (linear) line.

    Args:
      table: a pandas DataFrame with columns ``n``, ``topology``, ``speedup``.
    """
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(5.2, 4.2))
    ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
    ns = np.sort(table["n"].unique())
    ax.plot(ns, ns, "k--", label="ideal (linear)")
    for name, group in table.groupby("topology", sort=False):
        group = group.sort_values("n")
        ax.plot(group["n"], group["speedup"], "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("workers n")
    ax.set_ylabel("speedup T(ε, 1) / T(ε, n)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig

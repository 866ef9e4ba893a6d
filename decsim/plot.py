"""matplotlib figures from History objects, sweep results and study tables.

matplotlib is imported lazily, inside each function, so ``import decsim`` never imports it. Every
function returns a Figure (drawn into ``ax`` when one is given). Nothing here runs simulations or
imports the runner: the figures read results.

- :func:`convergence`: a metric against steps, gradient evaluations, gossip rounds or bits, the
  mean over seeds with a band (from Histories or from a :func:`decsim.load_results` frame).
- :func:`speedup`: measured speedup against n with the ideal line.
- :func:`error_vs_nt`: error against n·T (log-log) with the O(1/sqrt(nT)) reference and a fitted
  exponent with its interval over seeds.
- :func:`topology`: a drawing of a communication graph with its spectral gap.
- :func:`sweep_figures`: the figures of a sweep folder (``decsim plot DIR``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from . import theory


def _pyplot():
    import matplotlib.pyplot as plt  # headless machines fall back to the Agg backend by themselves

    return plt


def _label(hist) -> str:
    c = hist.config
    return f"{c.get('algorithm', '?')} · {c.get('topology', '?')}"


def convergence(histories, *, x: str = "steps", y: str = "loss", labels=None,
                logx: bool = False, logy: bool = True, subtract: float | None = None, ax=None,
                title: str | None = None, by: Sequence[str] | None = None):
    """Curves of metric ``y`` against ``x`` (``"steps"``, ``"grad_evals"``, ``"comm_rounds"``,
    ``"bits"``, ``"sim_time"`` of a run with a time model), the mean over seeds with a band from
    the minimum to the maximum.

    Args:
      histories: History objects (single or batched seeds), or a tidy DataFrame from
        :func:`decsim.load_results` (one curve per ``by`` combination, seeds averaged).
      subtract: subtract a constant from y (e.g. ``f*`` to plot suboptimality).
      by: for a DataFrame, the columns that tell curves apart (default: the config columns that
        vary across the frame, or ``group``).
    """
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.4, 4.2))
    ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
    if _is_frame(histories):
        curves = _frame_curves(histories, x, y, by)
        if labels is not None:
            curves = [(lab, xs, ys) for lab, (_, xs, ys) in zip(labels, curves)]
    else:
        labels = labels or [_label(h) for h in histories]
        curves = []
        for hist, label in zip(histories, labels):
            xs = np.asarray(
                hist.steps if x in ("steps", "step") else hist.metrics[x], dtype=np.float64
            )
            ys = np.atleast_2d(np.asarray(hist.metrics[y], dtype=np.float64))
            curves.append((label, np.atleast_2d(xs)[0], ys))
    for label, xs, ys in curves:
        if subtract is not None:
            ys = ys - subtract
        mean = np.nanmean(ys, axis=0)
        (line,) = ax.plot(xs, mean, label=label)
        if ys.shape[0] > 1:
            ax.fill_between(
                xs,
                np.nanmin(ys, axis=0),
                np.nanmax(ys, axis=0),
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " ") + (" − ref" if subtract is not None else ""))
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _is_frame(obj) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "groupby")


_RUN_COLUMNS = ("run", "group", "seed", "status", "diverged", "diverged_step", "step")


def varying_columns(frame) -> list:
    """The configuration columns of a results frame whose value differs between runs (the seed
    and per-evaluation columns excluded)."""
    from pandas.api.types import is_numeric_dtype

    config_cols = [
        c for c in frame.columns if "." in c or c in ("n_workers", "steps", "eval_every")
    ]
    out = []
    for c in config_cols:
        values = frame[c] if is_numeric_dtype(frame[c]) else frame[c].map(repr)  # tuples, None
        if values.nunique(dropna=False) > 1:
            out.append(c)
    return out


def _short(column: str) -> str:
    return (
        column.split(".")[-1] if column.count(".") == 1 and not column.endswith(".name") else column
    )


def _frame_curves(frame, x: str, y: str, by=None) -> list:
    """[(label, xs, ys [n_seeds, n_evals])] per combination of ``by``."""
    xcol = "step" if x in ("steps", "step") else x
    by = list(by) if by is not None else (varying_columns(frame) or ["group"])
    out = []
    for key, part in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        label = (
            ", ".join(f"{_short(c)}={v}" for c, v in zip(by, key))
            if by != ["group"]
            else str(key[0])
        )
        runs = [r for _, r in part.groupby("run", sort=False)]
        steps = runs[0]["step"].to_numpy()
        runs = [r for r in runs if len(r) == len(steps)]
        ys = np.stack([r[y].to_numpy(dtype=np.float64) for r in runs])
        xs = runs[0][xcol].to_numpy(dtype=np.float64)
        out.append((label, xs, ys))
    return out


def speedup(table, *, ax=None, title: str | None = None):
    """Measured speedup against n, one line per topology (and per algorithm when the table has
    several), with the ideal (linear) line.

    Args:
      table: a pandas DataFrame with columns ``n``, ``topology``, ``speedup`` (and optionally
        ``algorithm``), e.g. ``decsim.speedup_study(...).table``.
    """
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(5.2, 4.2))
    ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
    ns = np.sort(table["n"].unique())
    ax.plot(ns, ns, "k--", label="ideal (linear)")
    by = ["topology"]
    if "algorithm" in table.columns and table["algorithm"].nunique() > 1:
        by = ["algorithm", "topology"]
    for key, group in table.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        group = group.sort_values("n")
        ax.plot(group["n"], group["speedup"], "o-", label=" · ".join(str(k) for k in key))
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


def error_vs_nt(
    data,
    *,
    reference_exponent: float = -0.5,
    tail: float = 0.5,
    ax=None,
    title: str | None = None,
    ylabel: str = "error",
    confidence: float = 0.95,
):
    """Error against ``n·T`` on log-log axes with the ``(nT)^reference_exponent`` reference
    (O(1/sqrt(nT)) by default) and fitted exponents.

    Two kinds of ``data``:

    - curves: ``{n: (steps, errors)}`` with ``errors`` ``[n_evals]`` or ``[n_seeds, n_evals]``; each
      n is drawn against ``n · step`` (mean over seeds, band min–max) and labelled with the exponent
      fitted on its last ``tail`` fraction (:func:`decsim.theory.fit_rate`). With linear speedup
      the curves of all n collapse onto one line.
    - points: a DataFrame with columns ``nT`` and ``error`` (and ``seed``, and ``n`` for colours):
      one point per run and seed, e.g. the average squared gradient norm of runs with different
      n and T; the exponent is fitted per seed across the points and reported with its
      ``confidence`` interval over seeds.

    The reference line is anchored at the geometric mean of the points drawn.
    """
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(5.6, 4.2))
    ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
    all_x, all_y = [], []
    if _is_frame(data):
        frame = data
        seeds = frame["seed"] if "seed" in frame.columns else np.zeros(len(frame), int)
        frame = frame.assign(_seed=np.asarray(seeds))
        table = frame.pivot_table(index="_seed", columns="nT", values="error", aggfunc="mean")
        nT = table.columns.to_numpy(dtype=np.float64)
        errs = table.to_numpy(dtype=np.float64)
        groups = frame.groupby("n") if "n" in frame.columns else [(None, frame)]
        for n, part in groups:
            ax.plot(
                part["nT"], part["error"], "o", alpha=0.6, label=f"n={n}" if n is not None else None
            )
        fit = theory.fit_rate(nT, errs, tail=1.0, confidence=confidence)
        line = np.exp(fit.a) * nT**fit.b
        ax.plot(
            nT,
            line,
            "C3-",
            lw=1.5,
            label=f"fit: b = {fit.b:.3f} [{fit.ci_low:.3f}, {fit.ci_high:.3f}]",
        )
        all_x, all_y = list(nT), list(np.nanmean(errs, axis=0))
    else:
        for n in sorted(data):
            steps, errors = data[n]
            e = np.atleast_2d(np.asarray(errors, dtype=np.float64))
            xs = n * np.asarray(steps, dtype=np.float64)
            keep = xs > 0
            mean = np.nanmean(e, axis=0)
            fit = theory.fit_rate(xs, e, tail=tail, confidence=confidence)
            (ln,) = ax.plot(xs[keep], mean[keep], label=f"n={n} (b = {fit.b:.2f})")
            if e.shape[0] > 1:
                ax.fill_between(
                    xs[keep],
                    np.nanmin(e, axis=0)[keep],
                    np.nanmax(e, axis=0)[keep],
                    color=ln.get_color(),
                    alpha=0.15,
                    linewidth=0,
                )
            start = int(np.floor((1.0 - tail) * xs.size))
            all_x += list(xs[start:])
            all_y += list(mean[start:])
    x, y = np.asarray(all_x), np.asarray(all_y)
    ok = (x > 0) & np.isfinite(y) & (y > 0)
    if ok.any():
        ax_x = np.exp(np.mean(np.log(x[ok])))
        ax_y = np.exp(np.mean(np.log(y[ok])))
        grid = np.geomspace(x[ok].min(), x[ok].max(), 50)
        name = "1/sqrt(nT)" if reference_exponent == -0.5 else f"(nT)^{reference_exponent:g}"
        ax.plot(
            grid,
            theory.reference_curve(grid, ax_x, ax_y, reference_exponent),
            "k--",
            lw=1,
            label=f"O({name}) reference",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n · T  (workers × steps)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _layout(topo):
    import networkx as nx

    G = topo.nx_graph
    m = re.match(r"(torus|grid)\((\d+)x(\d+)\)", topo.name)
    if m:
        cols = int(m.group(3))
        return {u: (u % cols, -(u // cols)) for u in G.nodes}
    if re.match(
        r"(ring|complete|exponential|hypercube|one_peer_exponential|random_matching)\(", topo.name
    ):
        return nx.circular_layout(G)
    if topo.name.startswith("star("):
        return (
            nx.shell_layout(G, [[0], [u for u in G.nodes if u != 0]]) if topo.n > 1 else {0: (0, 0)}
        )
    return nx.spring_layout(G, seed=0)


def topology(topo, *, ax=None, layout=None, title: str | None = None):
    """A drawing of ``topo``'s graph (edge width ∝ mixing weight) titled with its spectral gap.

    Args:
      topo: a :class:`decsim.topology.Topology`.
      layout: node positions ``{node: (x, y)}`` (default: a grid for torus/grid, a circle for
        ring-like graphs, else a seeded spring layout).
    """
    import networkx as nx

    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(4.2, 4.4))
    ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
    G = topo.nx_graph
    pos = layout if layout is not None else _layout(topo)
    W = np.asarray(topo.W)
    edges = list(G.edges())
    wmax = max((W[u, v] for u, v in edges), default=1.0)
    widths = [0.5 + 2.5 * W[u, v] / wmax for u, v in edges]
    # torus wrap-around edges would cross the whole drawing: draw them as arcs
    curved = topo.name.startswith("torus")
    extra = (
        {"connectionstyle": "arc3,rad=0.15", "arrows": True, "arrowstyle": "-"} if curved else {}
    )
    nx.draw_networkx_edges(G, pos, ax=ax, edgelist=edges, width=widths, edge_color="0.45", **extra)
    nx.draw_networkx_nodes(G, pos, ax=ax, node_size=max(30, 260 - 4 * topo.n), node_color="C0")
    if topo.n <= 32:
        nx.draw_networkx_labels(G, pos, ax=ax, font_size=6 if topo.n > 16 else 8, font_color="w")
    ax.set_title(
        title or f"{topo.name}\nspectral gap {topo.spectral_gap:.4g}  (lam = {topo.lam:.4g})",
        fontsize="medium",
    )
    ax.set_axis_off()
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def sweep_figures(frame, *, x: str = "step", y: str | None = None) -> dict:
    """The figures of a sweep's results (a :func:`decsim.load_results` frame): ``{name: Figure}``.

    - ``convergence``: ``y`` (default ``suboptimality`` when known, else ``loss``) against ``x``,
      one curve per configuration (the varying config columns), mean and band over seeds;
    - ``convergence_bits``: the same against bits sent, when the runs send different amounts;
    - ``final_vs_<column>``: the final value against each numeric config column that varies
      (e.g. the learning rate: a tuning curve), one line per combination of the other columns.
    """
    plt = _pyplot()
    if len(frame) == 0:
        raise ValueError("the results frame is empty: the sweep folder holds no finished runs.")
    if y is None:
        y = "suboptimality" if "suboptimality" in frame.columns else "loss"
    if y not in frame.columns:
        raise ValueError(
            f"no metric {y!r} in the results; metrics: "
            f"{[c for c in frame.columns if '.' not in c and c not in _RUN_COLUMNS]}."
        )
    figs = {}
    positive = bool((frame[y].dropna() > 0).all())
    figs["convergence"] = convergence(
        frame, x=x, y=y, logy=positive, title=f"{y} (mean, min–max over seeds)"
    )
    if "bits" in frame.columns and frame.groupby("group")["bits"].max().nunique() > 1:
        figs["convergence_bits"] = convergence(
            frame,
            x="bits",
            y=y,
            logy=positive,
            logx=True,
            title=f"{y} against bits sent per worker",
        )
    if "sim_time" in frame.columns and frame["sim_time"].notna().any():
        figs["convergence_sim_time"] = convergence(
            frame, x="sim_time", y=y, logy=positive,
            title=f"{y} against simulated seconds (time model)",
        )
    varying = varying_columns(frame)
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    numeric = [c for c in varying if is_numeric_dtype(frame[c]) and not is_bool_dtype(frame[c])]
    last = frame.sort_values("step").groupby("run", sort=False).tail(1)
    for col in numeric:
        others = [c for c in varying if c != col]
        fig = plt.figure(figsize=(5.6, 4.2))
        ax = fig.add_subplot(1, 1, 1)
        parts = last.groupby(others, sort=True, dropna=False) if others else [((), last)]
        for key, part in parts:
            key = key if isinstance(key, tuple) else (key,)
            stats = part.groupby(col)[y].agg(["mean", "min", "max"]).sort_index()
            label = ", ".join(f"{_short(c)}={v}" for c, v in zip(others, key)) or None
            (ln,) = ax.plot(stats.index, stats["mean"], "o-", label=label)
            ax.fill_between(
                stats.index,
                stats["min"],
                stats["max"],
                color=ln.get_color(),
                alpha=0.2,
                linewidth=0,
            )
        values = last[col].to_numpy(dtype=np.float64)
        if np.all(values > 0) and values.max() / values.min() >= 10:
            ax.set_xscale("log")
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel(col)
        ax.set_ylabel(f"final {y}")
        ax.set_title(f"final {y} against {col}\n(mean, min–max over seeds)", fontsize="medium")
        if others:
            ax.legend(fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        figs[f"final_vs_{col}"] = fig
    return figs

"""The tables and figures of a comparison (:func:`decsim.study.compare.compare`).

- :func:`tail_score`: the final score of a curve (mean of its last evaluations).
- :func:`t_interval`: mean and two-sided t-interval of a sample (scipy's t quantile).
- :func:`costs_to_target`: per seed, the first evaluation at which the smoothed curve reaches
  a target, and what it had cost by then.
- :func:`summarise`: the per-algorithm summary table and the target.
- :func:`markdown_table`, :func:`latex_table`: the summary as Markdown and as a LaTeX booktabs
  tabular (written here: no jinja2 needed).
- :func:`write_compare`: ``compare.csv``, ``tuning.csv``, ``compare.md``, ``compare.tex``,
  ``compare.json`` and the figures ``curves_steps.png``, ``curves_bits.png`` and (when the runs
  record it) ``curves_sim_time.png``. matplotlib is imported only there.

Example:
    >>> m, lo, hi = t_interval([1.0, 2.0, 3.0])
    >>> m, round(lo, 4), round(hi, 4)
    (2.0, -0.4841, 4.4841)
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np

from .. import theory
from .store import json_safe

__all__ = ["COSTS", "tail_score", "t_interval", "costs_to_target", "summarise", "markdown_table",
           "latex_table", "write_compare"]

COSTS = ("steps", "grad_evals", "comm_rounds", "bits", "sim_time")  # cumulative costs
_HEADERS = {"steps": "steps", "grad_evals": "gradients", "comm_rounds": "rounds",
            "bits": "bits", "sim_time": "sim time"}


def t_interval(values, confidence: float = 0.95) -> tuple:
    """``(mean, low, high)`` of the finite ``values``: ``mean ± t_{(1+c)/2, k−1} · s / √k``
    (``s`` the sample standard deviation of the ``k`` values). One value: its interval is
    NaN; none: all NaN."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(v))
    if v.size == 1:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * np.std(v, ddof=1)
                 / math.sqrt(v.size))
    return mean, mean - half, mean + half


def tail_score(values, tail: float = 0.1) -> float:
    """The mean of the last ``ceil(tail · E)`` of ``E`` evaluations; +inf if any is not finite
    (a diverged run loses).

    Example:
      >>> tail_score([4.0, 3.0, 2.0, 1.0], 0.5), tail_score([1.0, float("nan")])
      (1.5, inf)
    """
    v = np.asarray(values, dtype=np.float64)
    k = max(1, math.ceil(tail * v.shape[-1] - 1e-9))
    last = v[..., -k:]
    return float(np.mean(last)) if np.all(np.isfinite(last)) else math.inf


def _window(n_evals: int, tail: float) -> int:
    return max(1, math.ceil(tail * n_evals - 1e-9))


def costs_to_target(hist, metric: str, target: float, tail: float = 0.1) -> dict:
    """``{cost: [value per seed]}`` at the first evaluation where the seed's curve of ``metric``,
    smoothed by a trailing mean over ``ceil(tail · E)`` evaluations (the window of the final
    score, so a seed whose final score is at most the target reaches it), is ``<= target``;
    NaN for a seed that never does. Costs: ``steps`` and the cumulative metrics of
    :data:`COSTS` the history records."""
    curves = np.atleast_2d(np.asarray(hist.metrics[metric], dtype=np.float64))
    smoothed = theory.smooth(curves, _window(curves.shape[-1], tail))
    names = ["steps"] + [c for c in COSTS[1:] if c in hist.metrics]
    out = {c: [] for c in names}
    for s, row in enumerate(smoothed):
        hits = np.flatnonzero(row <= target)
        for c in names:
            if not hits.size:
                out[c].append(math.nan)
            elif c == "steps":
                out[c].append(float(np.asarray(hist.steps)[hits[0]]))
            else:
                out[c].append(float(np.atleast_2d(hist.metrics[c])[s, hits[0]]))
    return out


def _finals(hist, tail: float) -> dict:
    """``{metric: [final score per seed]}`` for every recorded metric that is not a cost."""
    return {m: [tail_score(row, tail) for row in np.atleast_2d(np.asarray(v, np.float64))]
            for m, v in hist.metrics.items() if m not in COSTS}


def _format_hparams(values: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(values.items()))


def summarise(histories: dict, chosen: dict, settings: dict) -> tuple:
    """``(table, target)``: one row per algorithm (``histories``: ``{label: History}`` of the
    evaluation runs) with the final metrics' means and t-intervals over the seeds that did not
    diverge, and the costs to reach the target over the seeds that reached it."""
    import pandas as pd

    metric, tail = settings["metric"], settings["tail"]
    finals = {label: _finals(h, tail) for label, h in histories.items()}
    target = settings["target"]
    if target == "worst":
        means = [t_interval(f[metric])[0] for f in finals.values()]
        means = [m for m in means if np.isfinite(m)]
        target = max(means) if means else math.nan
    rows = []
    for label, hist in histories.items():
        row = {"algorithm": label, "hparams": _format_hparams(chosen[label]),
               "seeds": len(hist.seeds),
               "diverged": int(np.sum(~np.isfinite(finals[label][metric])))}
        names = [metric] + sorted(m for m in finals[label] if m != metric)
        for m in names:
            row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = t_interval(finals[label][m])
        row["target"] = float(target)
        costs = costs_to_target(hist, metric, target, tail)
        row["reached"] = int(np.sum(np.isfinite(costs["steps"])))
        for c in COSTS:
            if c in costs:
                stats = t_interval(costs[c])
                for suffix, v in zip(("", "_ci_low", "_ci_high"), stats):
                    row[f"{c}_to_target{suffix}"] = v
        rows.append(row)
    return pd.DataFrame(rows), float(target)


def _num(v) -> str:
    return "—" if not np.isfinite(v) else f"{v:.4g}"


def _cell(row, key: str) -> str:
    """``mean [low, high]`` of a column triple (``—`` for a missing value)."""
    if key not in row or not np.isfinite(row[key]):
        return "—"
    lo, hi = row.get(f"{key}_ci_low", math.nan), row.get(f"{key}_ci_high", math.nan)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return _num(row[key])
    return f"{_num(row[key])} [{_num(lo)}, {_num(hi)}]"


def _display(result) -> tuple:
    """The header and the text cells of the summary (shared by Markdown and LaTeX)."""
    t = result.table
    metric = result.settings["metric"]
    extra = [m for m in ("test_accuracy",) if m in t.columns and m != metric]
    costs = [c for c in COSTS if f"{c}_to_target" in t.columns]
    header = (["algorithm", "chosen", f"final {metric} (95% CI)"]
              + [f"final {m}" for m in extra] + ["reached"]
              + [f"{_HEADERS[c]} to target" for c in costs])
    cells = []
    for _, row in t.iterrows():
        cells.append([row["algorithm"], row["hparams"], _cell(row, metric)]
                     + [_cell(row, m) for m in extra] + [f"{row['reached']}/{row['seeds']}"]
                     + [_cell(row, f"{c}_to_target") for c in costs])
    return header, cells


def markdown_table(result) -> str:
    """The summary of a :class:`decsim.study.compare.CompareResult` as a Markdown table, with
    a line naming the target."""
    header, cells = _display(result)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    lines.append("")
    lines.append(f"Target: {result.settings['metric']} <= {result.target:.4g} "
                 f"({'the worst final mean' if result.settings['target'] == 'worst' else 'given'}"
                 f"); intervals: 95% t over the seeds that reached it / did not diverge.")
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "—": "--", "≤": r"$\le$"}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(result) -> str:
    """The summary as a LaTeX ``tabular`` with booktabs rules (``\\usepackage{booktabs}``)."""
    header, cells = _display(result)
    spec = "ll" + "r" * (len(header) - 2)
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _figures(result, out_dir: str) -> dict:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .. import plot

    labels = list(result.histories)
    hists = [result.histories[k] for k in labels]
    metric = result.settings["metric"]
    xs = ["steps", "bits"] + (["sim_time"] if all("sim_time" in h.metrics for h in hists) else [])
    files = {}
    for x in xs:
        with warnings.catch_warnings():  # a diverged algorithm's curves are NaN after it diverged
            warnings.simplefilter("ignore", RuntimeWarning)
            fig = plot.convergence(hists, x=x, y=metric, labels=labels, logx=x == "bits",
                                   title=f"tuned {metric} against {x.replace('_', ' ')} "
                                         f"(mean, min–max over {len(hists[0].seeds)} seeds)")
        if np.isfinite(result.target):
            fig.axes[0].axhline(result.target, color="k", lw=0.8, ls=":")
        path = os.path.join(out_dir, f"curves_{x}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files[f"curves_{x}"] = path
    return files


def write_compare(result, out_dir: str) -> dict:
    """Write the tables, the settings and the figures of a comparison; returns ``{kind: path}``."""
    os.makedirs(out_dir, exist_ok=True)
    files = {"csv": os.path.join(out_dir, "compare.csv"),
             "tuning_csv": os.path.join(out_dir, "tuning.csv"),
             "markdown": os.path.join(out_dir, "compare.md"),
             "latex": os.path.join(out_dir, "compare.tex"),
             "json": os.path.join(out_dir, "compare.json")}
    result.table.to_csv(files["csv"], index=False)
    result.tuning.to_csv(files["tuning_csv"], index=False)
    with open(files["markdown"], "w") as fh:
        fh.write(markdown_table(result) + "\n")
        for note in result.warnings:
            fh.write(f"\nWarning: {note}\n")
    with open(files["latex"], "w") as fh:
        fh.write(latex_table(result))
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in result.settings.items()}
    with open(files["json"], "w") as fh:
        json.dump(json_safe({"settings": settings, "chosen": result.chosen,
                             "target": result.target, "warnings": result.warnings,
                             "store": result.store, "runs_computed": result.runs_computed,
                             "runs_reused": result.runs_reused}), fh, indent=2)
    files.update(_figures(result, out_dir))
    return files

"""Write notebooks/07_compare.ipynb (cells below) and execute it in place with its outputs.

Run after the branches that register extra, qg_dsgdm and beer are merged: the notebook runs both
example comparisons (examples/compare_heterogeneity.toml, examples/compare_compressed.toml)."""

import pathlib

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]

CELLS = [
    ("md", """# 07 — Fair comparisons: every algorithm tuned the same way

Papers disagree about which decentralized method is best partly because each tunes its own
method and not the baselines. `ds.compare` (and `decsim compare SPEC.toml --out DIR`) fixes the
protocol of docs/reference/comparison.md:

1. each algorithm's learning rate (and any other numeric hyperparameter given as a list) runs on a
   grid over two *tuning* seeds, one vmapped program per algorithm; γ of compressed methods comes
   from `ds.algorithms.tune_gamma`;
2. the setting with the smallest mean final loss (the last 10% of evaluations averaged; diverged
   runs lose) is chosen, with a warning when it lies at the edge of its grid;
3. the chosen settings run on five fresh *evaluation* seeds;
4. the table gives the final metrics with 95% t-intervals and the cost (steps, gradients, rounds,
   bits, simulated time when recorded) to reach the worst algorithm's final loss."""),
    ("code", """import os
import tomllib
import pandas as pd
import decsim as ds
from IPython.display import Image, Markdown, display

# the example specs ship in the project's examples/ folder, beside the decsim package
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ds.__file__)))
STEPS = 400          # the examples' length; lower it for a quicker look"""),
    ("code", """def read(result, cost):
    \"\"\"Read a comparison table: who is best by final loss (and whether the 95% intervals
    separate it from the runner-up), and who reaches the target at the lowest cost.\"\"\"
    t = result.table.sort_values("loss")
    best, second = t.iloc[0], t.iloc[1]
    apart = best["loss_ci_high"] < second["loss_ci_low"]
    print(f"lowest final loss: {best['algorithm']} ({best['loss']:.4g}); "
          f"{'clearly' if apart else 'not clearly (the intervals overlap)'} below "
          f"{second['algorithm']} ({second['loss']:.4g})")
    reached = result.table[result.table["reached"] > 0].sort_values(cost)
    for _, row in reached.iterrows():
        print(f"  {row['algorithm']:>18}: {cost} = {row[cost]:.4g} "
              f"({int(row['reached'])}/{int(row['seeds'])} seeds reached the target)")"""),
    ("md", """## Heterogeneous data: bias-corrected methods against D-SGD

Label-sorted digits over a ring of 16 workers (lazy weights, so that D² applies)."""),
    ("code", """with open(os.path.join(ROOT, "examples", "compare_heterogeneity.toml"), "rb") as fh:
    spec = tomllib.load(fh)
spec["base"]["steps"] = STEPS
het = ds.compare(spec, "compare_heterogeneity", progress=False)
display(Markdown(het.markdown()))
for w in het.warnings:
    print("warning:", w)"""),
    ("code", """read(het, "steps_to_target")"""),
    ("md", """D-SGD keeps the heterogeneity bias of label-sorted data: its final loss is the worst,
so it sets the target. Every bias-corrected method gets below it, and the table says at what price:
DeTAG spends two gradients and two rounds per step, so compare its *gradients to target* and
*rounds to target*, not only its steps. The tuning table shows each method's loss over its
learning-rate grid (diverged points are `inf`)."""),
    ("code", """het.tuning.pivot_table(index="learning_rate", columns="algorithm",
                      values="score")"""),
    ("code", """display(Image(het.files["curves_steps"]))"""),
    ("md", """## Compressed communication: the cost in bits

Choco-SGD, DeepSqueeze and BEER with top-5% compression (γ from `tune_gamma`), MALCOM-PSGD with
its own quantizer and code (γ a grid axis); read the *bits to target* column and the figure."""),
    ("code", """with open(os.path.join(ROOT, "examples", "compare_compressed.toml"), "rb") as fh:
    spec = tomllib.load(fh)
spec["base"]["steps"] = STEPS
comp = ds.compare(spec, "compare_compressed", progress=False)
display(Markdown(comp.markdown()))
print("chosen:", comp.chosen)
for w in comp.warnings:
    print("warning:", w)"""),
    ("code", """read(comp, "bits_to_target")"""),
    ("md", """Against bits, the ranking is not the ranking against steps: read both cost columns.
BEER sends two compressed messages per step (the model and the tracker), so each of its steps costs
about twice Choco's bits; what it buys is the removal of the heterogeneity floor, which shows on
longer runs and more heterogeneous data (benchmarks/beer.py)."""),
    ("code", """display(Image(comp.files["curves_bits"]))"""),
    ("code", """# the same tables as CSV and LaTeX (booktabs), ready for a paper
print(open(comp.files["latex"]).read())
pd.read_csv(comp.files["csv"])[["algorithm", "hparams", "loss", "loss_ci_low", "loss_ci_high",
                               "reached", "bits_to_target"]]"""),
    ("md", """Rerunning a cell reuses every finished run from its store (`<out>/runs`), so an
interrupted comparison resumes where it stopped."""),
]


def main():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md"
                else nbformat.v4.new_code_cell(src) for kind, src in CELLS]
    path = ROOT / "notebooks" / "07_compare.ipynb"
    NotebookClient(nb, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    nbformat.write(nb, path)
    print("wrote", path)


if __name__ == "__main__":
    main()

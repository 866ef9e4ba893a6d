// MathJax 3 configuration, read when tex-svg-full.js starts (it is loaded right after this file).
// Markdown pages: pymdownx.arithmatex wraps each formula in an element of class "arithmatex" with
// \( \) or \[ \] delimiters. Notebook pages: nbconvert leaves $ and $$ in the text.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore",
    processHtmlClass: "tex2jax_process|arithmatex",
  },
  svg: { fontCache: "global" },
};

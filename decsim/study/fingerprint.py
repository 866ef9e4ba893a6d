"""What a stored run records about its problem: its known constants and its fingerprint.

:func:`problem_facts` gives the constants a run's ``info`` records (``f_star``, ``L``, ...).

**Problem fingerprints.** A run's id is the hash of its config, so it cannot see a change of a
problem's code or data under the same name and arguments. Every record a sweep writes therefore
carries ``problem_sha256`` (:func:`problem_fingerprint`: the loss and metric functions' code
objects, the constants and the functions of their own module they use, and the bytes, shapes
and dtypes of the data and initial parameters). A sweep reuses a stored run of a problem whose
constructor lives outside ``decsim`` (a user constructor registered in
``decsim.problems.REGISTRY``) only when its fingerprint equals the current problem's (a record
without one, older or written by ``decsim run --out``, does not); otherwise it warns and
recomputes it, under the same id. Built-in problems are versioned with decsim: their runs are
reused by id alone, as before, so existing stores keep working without building any problem.
(Code objects depend on the Python version: a user problem's runs are recomputed after a
Python upgrade.)

Example:
    >>> import decsim as ds
    >>> from decsim.study import fingerprint
    >>> fingerprint.problem_facts(ds.problems.quadratic(4, 3))["f_star"] >= 0
    True
    >>> a, b = (fingerprint.problem_fingerprint(ds.problems.quadratic(4, 3)) for _ in range(2))
    >>> a == b, len(a)
    (True, 64)
"""

from __future__ import annotations

import functools
import hashlib
import struct
import types

import numpy as np

__all__ = ["problem_facts", "problem_fingerprint"]


def problem_facts(problem) -> dict:
    """The known constants of a problem (``f_star``, ``L``, ``mu``, ``sigma2``, ``zeta2``) that
    its ``info`` holds as numbers: what a stored run's ``info`` records about its problem."""
    info = problem.info or {}
    return {k: float(info[k]) for k in ("f_star", "L", "mu", "sigma2", "zeta2")
            if k in info and isinstance(info[k], (int, float, np.floating, np.integer))}


def problem_fingerprint(problem) -> str:
    """A SHA-256 (hex) of what a problem computes: its code and its data.

    It covers the loss, test-metric and extra-metric functions (their code objects, recursively
    through nested functions: bytecode, constants, names; their default arguments and closure
    values; the constants, modules' names and the functions of their own module that they name as
    globals), the bytes, shapes and dtypes of ``params0``, ``data``, ``counts``, ``test_data``
    and ``aux`` (with their tree structure), and the name, size, batch size, noise and known
    constants. Equal problems built twice have equal fingerprints; a changed line of the loss or
    a changed data value changes it. File names and line numbers do not count.

    Args:
      problem: a :class:`decsim.Problem`.

    Returns:
      64 hex digits.
    """
    h = hashlib.sha256()
    feed = _Fingerprint(h)
    feed.value(("problem", problem.name, problem.n_workers, problem.batch_size,
                float(problem.noise_std), problem_facts(problem)))
    for name in ("loss_fn", "test_metrics", "extra_metrics"):
        feed.tag(name)
        feed.value(getattr(problem, name))
    for name in ("params0", "data", "counts", "test_data", "aux"):
        feed.tag(name)
        feed.tree(getattr(problem, name))
    return h.hexdigest()


class _Fingerprint:
    """Feeds a description of Python values, functions and arrays into a hash, deterministically
    (no ids, addresses or set orders)."""

    _MAX_DEPTH = 200

    def __init__(self, h, home=None):
        self.h, self.seen, self.depth = h, {}, 0
        self.home = set() if home is None else home  # modules whose functions are described

    def tag(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        self.h.update(struct.pack("<Q", len(data)))
        self.h.update(data)

    def array(self, a) -> None:
        try:
            a = np.ascontiguousarray(np.asarray(a))
        except Exception:  # not convertible: only its type can be described
            self.tag(f"unconvertible {type(a).__module__}.{type(a).__qualname__}")
            return
        self.tag(f"array {a.dtype.str} {a.shape}")
        if a.dtype.hasobject:
            for v in a.ravel():
                self.value(v)
        elif a.nbytes:
            self.h.update(a.reshape(-1).view(np.uint8).data)

    def tree(self, tree) -> None:
        import jax

        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        self.tag(f"tree {len(leaves)}")
        for path, leaf in leaves:
            self.tag(f"leaf {jax.tree_util.keystr(path)}")
            if isinstance(leaf, np.ndarray) or hasattr(leaf, "__array__"):
                self.array(leaf)
            else:
                self.value(leaf)

    def _digest(self, value) -> bytes:
        sub = _Fingerprint(hashlib.sha256(), self.home)
        sub.depth = self.depth
        sub.value(value)
        return sub.h.digest()

    def value(self, v) -> None:
        if v is None or isinstance(v, (bool, int, float, complex, str, bytes)):
            self.tag(f"{type(v).__name__} {v!r}")
            return
        if self.depth > self._MAX_DEPTH:
            self.tag(f"deep {type(v).__qualname__}")
            return
        # immutable values are described in full wherever they occur (how Python shares equal
        # constants differs between a fresh compile and a .pyc); mutable objects and functions
        # once, so cycles end
        if not isinstance(v, (tuple, frozenset, types.CodeType, np.generic)):
            if id(v) in self.seen:
                self.tag(f"seen {self.seen[id(v)][0]}")
                return
            self.seen[id(v)] = (len(self.seen), v)  # keeps v alive, so its id is not reused
        self.depth += 1
        try:
            self._value(v)
        finally:
            self.depth -= 1

    def _value(self, v) -> None:
        if isinstance(v, (np.ndarray, np.generic)):
            self.array(v)
        elif isinstance(v, dict):
            self.tag(f"dict {len(v)}")
            items = list(v.items())
            if all(isinstance(k, str) for k, _ in items):
                items.sort(key=lambda kv: kv[0])
            for k, x in items:
                self.value(k)
                self.value(x)
        elif isinstance(v, (set, frozenset)):
            self.tag(f"set {len(v)}")
            for d in sorted(self._digest(x) for x in v):  # set order varies with str hashing
                self.h.update(d)
        elif isinstance(v, (list, tuple)):
            self.tag(f"{type(v).__qualname__} {len(v)}")
            for x in v:
                self.value(x)
        elif isinstance(v, types.CodeType):
            self.code(v)
        elif isinstance(v, functools.partial):
            self.tag("partial")
            self.value((v.func, v.args, v.keywords))
        elif isinstance(v, types.FunctionType):
            self.function(v)
        elif isinstance(v, types.MethodType):
            self.tag("method")
            self.value((v.__func__, v.__self__))
        elif isinstance(v, types.ModuleType):
            self.tag(f"module {v.__name__}")
        elif isinstance(v, (type, types.BuiltinFunctionType, np.ufunc)):
            self.tag(f"named {getattr(v, '__module__', '')}.{getattr(v, '__qualname__', v)}")
        elif hasattr(v, "__wrapped__"):  # jax.jit, functools.wraps
            self.tag(f"wrapped {type(v).__qualname__}")
            self.value(v.__wrapped__)
        elif hasattr(v, "shape") and hasattr(v, "dtype") and hasattr(v, "__array__"):
            self.array(v)  # jax arrays
        else:
            # another object: its type; its attributes and __call__ only if its class comes from
            # the module of a function described here (a library's objects are named, not walked)
            cls = type(v)
            self.tag(f"object {cls.__module__}.{cls.__qualname__}")
            if cls.__module__ in self.home:
                attrs = getattr(v, "__dict__", None)
                if isinstance(attrs, dict):
                    self.value(dict(attrs))
                call = next((k.__dict__["__call__"] for k in cls.__mro__
                             if "__call__" in k.__dict__), None)
                if isinstance(call, types.FunctionType):
                    self.value(call)

    def code(self, code: types.CodeType) -> None:
        self.tag(f"code {code.co_argcount} {code.co_posonlyargcount} {code.co_kwonlyargcount} "
                 f"{code.co_flags}")
        self.h.update(code.co_code)
        self.h.update(getattr(code, "co_exceptiontable", b""))
        self.value((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars))
        self.tag(f"consts {len(code.co_consts)}")
        for const in code.co_consts:
            self.value(const)

    def function(self, fn: types.FunctionType) -> None:
        self.tag("function")
        self.code(fn.__code__)
        self.value((fn.__defaults__, fn.__kwdefaults__))
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell
                cells.append("<empty cell>")
        self.value(tuple(cells))
        module = getattr(fn, "__module__", None)
        self.home.add(module)
        g = fn.__globals__
        for name in sorted(_global_names(fn.__code__)):
            if name not in g:
                continue  # a builtin, or a name bound later
            v = g[name]
            self.tag(f"global {name}")
            if isinstance(v, types.FunctionType) and v.__module__ != module:
                self.tag(f"named {v.__module__}.{v.__qualname__}")  # a library function
            elif isinstance(v, type):
                self.tag(f"named {v.__module__}.{v.__qualname__}")
            else:
                self.value(v)


def _global_names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names

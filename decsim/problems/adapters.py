"""Model adapters: a Flax (nnx or linen) or Equinox model as a decsim problem.

``flax_parts`` / ``equinox_parts`` turn a model into the pieces of the extended problem contract:

- ``loss_fn(params, model_state, batch, key) -> (loss, new_model_state)`` on batches
  ``{"x": [b, ...], "y": [b, ...]}``; ``key`` a PRNG key means training mode (dropout draws its
  masks from ``key``, BatchNorm normalizes with the batch statistics and updates its running
  statistics), ``key=None`` evaluation mode (no dropout, running statistics, the state returned
  unchanged);
- ``params0``: the trainable parameters only, a pytree of arrays (flax: nested dicts;
  equinox: the model's floating arrays, with ``None`` elsewhere);
- ``model_state0``: everything else the forward pass reads or writes (BatchNorm statistics;
  ``{}`` when there is none). RNG state is never part of either: every random stream is re-derived
  from ``key`` at each call, so a call is a pure function of its arguments;
- ``metrics_fn(params, model_state, batch) -> {"test_loss", "test_accuracy"}`` in evaluation mode
  (``test_accuracy`` when the labels are integers and the outputs have a class axis of 2 or
  more).

``from_flax`` / ``from_equinox`` hand these to :func:`decsim.problems.custom`. With
``init="independent"`` every worker draws its own initial parameters: a linen module is
initialized once per worker; an nnx or Equinox model must then be given as a function that builds
it (``rngs -> nnx.Module``, ``key -> eqx.Module`` or ``key -> (model, state)``).

Conventions per library:

- ``flax.nnx``: the Module is split with ``nnx.split`` into its graph, its ``nnx.Param`` state,
  its RNG state and the rest. A call merges them into a fresh module, sets ``model.train()`` or
  ``model.eval()`` (``deterministic`` / ``use_running_average``), re-seeds every ``RngStream``
  with ``fold_in(key, i)`` and calls ``model(x)``. Build dropout layers with ``rngs=`` so they own
  a stream.
- ``flax.linen``: ``model.init`` / ``model.apply``; the ``train_kwarg`` keyword (default
  ``"train"``; ``None`` when ``__call__`` takes none) is ``True`` in training mode; collections
  other than ``"params"`` are mutable in training mode; ``rngs={c: key}`` for each name in
  ``rng_collections`` (default ``("dropout",)``).
- ``equinox``: the model is *per example*: ``__call__`` takes one example, ``(x, state, *, key)
  -> (out, state)`` for a stateful model (layers holding ``eqx.nn.State``, e.g. BatchNorm built
  with ``axis_name="batch"``) or ``(x, *, key) -> out`` for a stateless one. The adapter vmaps it
  over the batch with ``axis_name="batch"``, one key per example, and uses
  ``eqx.nn.inference_mode`` for evaluation. Trainable parameters are
  ``eqx.partition(model, eqx.is_inexact_array)``.

Example:
    >>> import jax, numpy as np
    >>> from flax import nnx
    >>> from decsim.problems.adapters import flax_parts
    >>> net = nnx.Linear(8, 3, rngs=nnx.Rngs(0))
    >>> loss_fn, params0, state0, metrics = flax_parts(net, np.zeros((1, 8), np.float32))
    >>> sorted(params0), state0
    (['bias', 'kernel'], {})
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import integer, one_of

__all__ = ["flax_parts", "equinox_parts", "from_flax", "from_equinox", "LOSSES"]

LOSSES = ("cross_entropy", "mse")


# ----------------------------------------------------------------------------- losses, metrics


def _cross_entropy(outputs, y):
    logp = jax.nn.log_softmax(outputs, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[..., None].astype(jnp.int32), axis=-1))


def _mse(outputs, y):
    if outputs.ndim == y.ndim + 1 and outputs.shape[-1] == 1:
        outputs = outputs[..., 0]
    return jnp.mean((outputs - jnp.asarray(y).astype(outputs.dtype)) ** 2)


def _loss_of(loss) -> Callable:
    if callable(loss):
        return loss
    if loss == "cross_entropy":
        return _cross_entropy
    if loss == "mse":
        return _mse
    raise ValueError(f"loss must be one of {LOSSES} or a function (outputs, y) -> scalar mean; "
                     f"got {loss!r}.")


def _assemble(apply: Callable, loss: Callable, params0, state0, sample_x, where):
    """The contract's parts from ``apply(params, model_state, x, key) -> (outputs, new_state)``
    (``key=None``: evaluation mode), after checking that the model runs on ``sample_x`` in both
    modes (abstractly: nothing is computed)."""
    for key in (None, jax.random.key(0)):
        try:
            jax.eval_shape(apply, params0, state0, sample_x, key)
        except Exception as err:  # noqa: BLE001 - any failure of user code is reported the same way
            first = str(err).splitlines()[0] if str(err) else ""
            mode = "evaluation" if key is None else "training"
            raise ValueError(f"{where}: the model fails in {mode} mode on sample_x of shape "
                             f"{tuple(np.shape(sample_x))}: {type(err).__name__}: {first}. "
                             "sample_x must be a batch [b, ...] of the model's input.") from None

    def loss_fn(params, model_state, batch, key):
        out, new_state = apply(params, model_state, batch["x"], key)
        return loss(out, batch["y"]), (model_state if key is None else new_state)

    def metrics_fn(params, model_state, batch):
        out, _ = apply(params, model_state, batch["x"], None)
        y = batch["y"]
        metrics = {"test_loss": loss(out, y)}
        if jnp.issubdtype(y.dtype, jnp.integer) and out.ndim == y.ndim + 1 and out.shape[-1] > 1:
            metrics["test_accuracy"] = jnp.mean(jnp.argmax(out, axis=-1) == y)
        return metrics

    return loss_fn, params0, state0, metrics_fn


def _typed_key(key):
    """A typed PRNG key from either a typed key or raw ``uint32[2]`` key data."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


# ----------------------------------------------------------------------------- flax


def _import_flax():
    try:
        from flax import linen, nnx
    except ImportError as err:
        raise ImportError("decsim's flax adapter needs flax: pip install decsim[flax]") from err
    return nnx, linen


def flax_parts(model, sample_x, *, seed: int = 0, loss="cross_entropy",
               train_kwarg: str | None = "train", rng_collections=("dropout",)):
    """A Flax model (``flax.nnx.Module`` or ``flax.linen.Module``) as the extended contract's parts.

    Args:
      model: an initialized ``nnx.Module`` (called as ``model(x)`` on a batch), a function
        ``rngs -> nnx.Module`` (called with ``nnx.Rngs(seed)``), or a ``linen.Module``
        (initialized here with ``model.init``).
      sample_x: an input batch ``[b, ...]`` (linen: used to initialize; nnx: to check the model).
      seed: the initialization seed of a linen module or of an nnx builder function.
      loss: ``"cross_entropy"`` (integer labels ``y``, outputs are logits), ``"mse"``, or a
        function ``(outputs, y) -> scalar`` mean over the batch.
      train_kwarg: linen only: the keyword of ``__call__`` that is ``True`` in training mode and
        ``False`` in evaluation mode; ``None`` when the module takes none.
      rng_collections: linen only: the RNG collection names the module draws from in training.

    Returns:
      ``(loss_fn, params0, model_state0, metrics_fn)``; see the module docstring.

    Example:
        >>> import jax, numpy as np
        >>> from flax import nnx
        >>> from decsim.problems.adapters import flax_parts
        >>> net = nnx.Sequential(nnx.Linear(8, 4, rngs=nnx.Rngs(0)),
        ...                      nnx.BatchNorm(4, rngs=nnx.Rngs(1)))
        >>> x = np.ones((2, 8), np.float32)
        >>> loss_fn, params0, state0, metrics = flax_parts(net, x, loss="mse")
        >>> sorted(state0["layers"][1])
        ['mean', 'var']
        >>> loss, state1 = loss_fn(params0, state0, {"x": x, "y": np.zeros((2, 4))},
        ...                        jax.random.key(0))
        >>> loss.shape
        ()
    """
    return _flax(model, sample_x, seed, loss, train_kwarg, rng_collections)[0]


def _flax(model, sample_x, seed, loss, train_kwarg, rng_collections):
    """``(parts, draw, class name)``; ``draw``: ``key -> params`` or ``None`` (a module instance,
    which cannot be re-initialized)."""
    nnx, linen = _import_flax()
    loss = _loss_of(loss)
    seed = integer("seed", seed, min=0)
    sample_x = jnp.asarray(sample_x)
    if isinstance(model, linen.Module):
        if train_kwarg is not None and not isinstance(train_kwarg, str):
            raise ValueError(f"train_kwarg must be a keyword name or None; got {train_kwarg!r}.")
        if isinstance(rng_collections, str):
            rng_collections = (rng_collections,)
        apply, params0, state0, draw = _linen_apply(model, sample_x, seed, train_kwarg,
                                                    tuple(rng_collections))
        instance = model
    else:
        build = None
        if _is_builder(model):
            build, model = model, model(nnx.Rngs(seed))
        if not isinstance(model, nnx.Module):
            raise ValueError(f"model must be a flax.nnx.Module, a function rngs -> nnx.Module, "
                             f"or a flax.linen.Module; got {type(model).__name__}. For an "
                             "Equinox model use from_equinox.")
        apply, params0, state0 = _nnx_apply(nnx, model)
        instance = model
        draw = None if build is None else _drawing(
            lambda k: nnx.to_pure_dict(nnx.state(build(nnx.Rngs(_typed_key(k))), nnx.Param)),
            params0)
    parts = _assemble(apply, loss, params0, state0, sample_x, "flax_parts")
    return parts, draw, type(instance).__name__


def _is_builder(model) -> bool:
    """A function (or class) that builds the model, as opposed to a built model (which may be
    callable itself)."""
    return inspect.isclass(model) or isinstance(
        model, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial))


def _drawing(make: Callable, params0) -> Callable:
    """``key -> params``: ``make(key)``'s leaves in the structure of ``params0`` (checked: the
    same count, shapes and dtypes), so every worker's draw stacks with the others."""
    structure = jax.tree.structure(params0)
    want = [(np.shape(a), np.asarray(a).dtype) for a in jax.tree.leaves(params0)]

    def draw(key):
        leaves = jax.tree.leaves(make(key))
        got = [(np.shape(a), np.asarray(a).dtype) for a in leaves]
        if got != want:
            raise ValueError(f"the model built from a fresh key has parameters {got}, unlike the "
                             f"first build's {want}; the builder function must build the same "
                             "architecture for every key.")
        return jax.tree.unflatten(structure, leaves)

    return draw


def _nnx_apply(nnx, model):
    graphdef, param_state, rng_state, rest_state = nnx.split(model, nnx.Param, nnx.RngState, ...)

    def fresh(template, values):
        # new Variables in the current trace, holding `values` as jax arrays (a numpy value
        # would be written in place by a layer's `var[...] = new`)
        copy = jax.tree.map(lambda v: v, template)
        nnx.replace_by_pure_dict(copy, jax.tree.map(jnp.asarray, values))
        return copy

    def apply(params, model_state, x, key):
        rngs = jax.tree.map(lambda v: v, rng_state)
        m = nnx.merge(graphdef, fresh(param_state, params), rngs, fresh(rest_state, model_state))
        if key is None:
            m.eval()
            return m(x), model_state
        m.train()
        key = _typed_key(key)
        streams = [node for _, node in nnx.iter_graph(m) if isinstance(node, nnx.RngStream)]
        for i, stream in enumerate(streams):
            stream.key.set_value(jax.random.fold_in(key, i))
            stream.count.set_value(jnp.zeros_like(stream.count.get_value()))
        out = m(x)
        *_, new_state = nnx.split(m, nnx.Param, nnx.RngState, ...)
        return out, nnx.to_pure_dict(new_state)

    return apply, nnx.to_pure_dict(param_state), nnx.to_pure_dict(rest_state)


def _linen_apply(model, sample_x, seed, train_kwarg, rng_collections):
    k_params, k_rng = jax.random.split(jax.random.key(seed))
    mode = (lambda train: {}) if train_kwarg is None else (lambda train: {train_kwarg: train})
    init_rngs = {"params": k_params, **{c: k_rng for c in rng_collections}}
    try:
        variables = dict(model.init(init_rngs, sample_x, **mode(False)))
    except Exception as err:  # noqa: BLE001
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"flax_parts: model.init fails on sample_x of shape "
                         f"{tuple(np.shape(sample_x))} with {mode(False) or 'no train keyword'}"
                         f": {type(err).__name__}: {first}. Check sample_x and train_kwarg "
                         f"(now {train_kwarg!r}; None when __call__ takes none).") from None
    if "params" not in variables:
        raise ValueError(f"the linen module {type(model).__name__} has no parameters "
                         "(model.init returned no 'params' collection).")
    params0 = variables.pop("params")
    mutable = sorted(variables)

    def draw(key):
        k_params, k_rng = jax.random.split(_typed_key(key))
        rngs = {"params": k_params, **{c: k_rng for c in rng_collections}}
        return model.init(rngs, sample_x, **mode(False))["params"]

    def apply(params, model_state, x, key):
        variables = {"params": params, **model_state}
        if key is None:
            if train_kwarg is None and mutable:
                return model.apply(variables, x, mutable=mutable)[0], model_state
            return model.apply(variables, x, **mode(False)), model_state
        rngs = {c: jax.random.fold_in(key, i) for i, c in enumerate(rng_collections)}
        if not mutable:
            return model.apply(variables, x, rngs=rngs, **mode(True)), {}
        out, updates = model.apply(variables, x, rngs=rngs, mutable=mutable, **mode(True))
        return out, {**model_state, **updates}

    return apply, params0, variables, _drawing(draw, params0)


# ----------------------------------------------------------------------------- equinox


def _import_equinox():
    try:
        import equinox as eqx
    except ImportError as err:
        raise ImportError("decsim's equinox adapter needs equinox: pip install "
                          "decsim[equinox]") from err
    return eqx


def _takes_key(fn) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    return "key" in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def equinox_parts(model, sample_x, *, state=None, stateful: bool | None = None,
                  loss="cross_entropy", seed: int = 0):
    """An Equinox model (per example, vmapped over the batch) as the extended contract's parts.

    Args:
      model: an ``eqx.Module`` whose ``__call__`` takes one example: ``(x, state, *, key) ->
        (out, state)`` when stateful, ``(x, *, key) -> out`` otherwise (``key`` may be absent).
        The pair ``(model, state)`` that ``eqx.nn.make_with_state`` returns is accepted too, and
        a function ``key -> model`` or ``key -> (model, state)`` (called with
        ``jax.random.key(seed)``). BatchNorm layers must use ``axis_name="batch"`` (the
        adapter's vmap axis).
      sample_x: an input batch ``[b, ...]`` (used to check the model).
      state: the model's ``eqx.nn.State``; ``None``: built with ``eqx.nn.State(model)`` when the
        model has stateful layers.
      stateful: whether ``__call__`` takes and returns the state; ``None``: whether the model
        has stateful layers (``eqx.nn.StateIndex``) or a ``state`` is given.
      loss: ``"cross_entropy"`` (integer labels), ``"mse"``, or ``(outputs, y) -> scalar`` mean.
      seed: the key of a builder function ``model``.

    Returns:
      ``(loss_fn, params0, model_state0, metrics_fn)``: ``params0`` is
      ``eqx.partition(model, eqx.is_inexact_array)[0]``; ``model_state0`` the ``eqx.nn.State``'s
      entries as a dict ``{name: value}`` (e.g. ``"Net.bn.ema_state_index": (mean, var)``;
      ``{}`` for a stateless model).

    Example:
        >>> import jax, numpy as np, equinox as eqx
        >>> from decsim.problems.adapters import equinox_parts
        >>> net = eqx.nn.MLP(8, 3, 4, 1, key=jax.random.key(0))
        >>> loss_fn, params0, state0, metrics = equinox_parts(net, np.zeros((2, 8), np.float32))
        >>> batch = {"x": np.zeros((2, 8), np.float32), "y": np.array([0, 2])}
        >>> sorted(metrics(params0, state0, batch))
        ['test_accuracy', 'test_loss']
    """
    return _equinox(model, sample_x, state, stateful, loss, seed)[0]


def _equinox(model, sample_x, state, stateful, loss, seed):
    """``(parts, draw, class name)`` as :func:`_flax`."""
    eqx = _import_equinox()
    seed = integer("seed", seed, min=0)
    build = None
    if _is_builder(model):
        build, model = model, model(jax.random.key(seed))
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], eqx.nn.State):
        if state is not None:
            raise ValueError("state was given twice: as model=(model, state) and as state=.")
        model, state = model
    if not isinstance(model, eqx.Module):
        raise ValueError(f"model must be an equinox.Module, a (model, state) pair, or a "
                         f"function key -> model; got {type(model).__name__}. For a Flax model "
                         "use from_flax.")
    if state is not None and not isinstance(state, eqx.nn.State):
        raise ValueError(f"state must be an eqx.nn.State or None; got {type(state).__name__}.")
    has_index = any(isinstance(leaf, eqx.nn.StateIndex) for leaf in jax.tree.leaves(
        model, is_leaf=lambda node: isinstance(node, eqx.nn.StateIndex)))
    if stateful is None:
        stateful = has_index or state is not None
    if stateful and state is None:
        if not has_index:
            raise ValueError("stateful=True but the model has no stateful layers and no state "
                             "was given; pass state= or stateful=False.")
        state = eqx.nn.State(model)
    if stateful:
        model = eqx.nn.delete_init_state(model)  # else the initial state would become params
    loss = _loss_of(loss)
    params0, static = eqx.partition(model, eqx.is_inexact_array)
    to_dict, to_state = _state_codec(eqx, model, state) if stateful else (None, None)
    state0 = to_dict(state) if stateful else {}
    with_key = _takes_key(type(model).__call__)

    def call(m, x, model_state, k):
        kw = {"key": k} if with_key else {}
        return m(x, model_state, **kw) if stateful else (m(x, **kw), model_state)

    def forward(params, model_state, x, key):
        m = eqx.combine(params, static)
        if key is None:
            m = eqx.nn.inference_mode(m)
            per = lambda xi: call(m, xi, model_state, None)
            return jax.vmap(per, axis_name="batch", out_axes=(0, None))(x)
        keys = jax.random.split(key, x.shape[0])
        per = lambda xi, ki: call(m, xi, model_state, ki)
        return jax.vmap(per, axis_name="batch", out_axes=(0, None))(x, keys)

    dtypes = jax.tree.map(lambda a: np.asarray(a).dtype, state0)

    def apply(params, model_state, x, key):
        model_state = _like(model_state, dtypes)
        if not stateful:
            return forward(params, model_state, x, key)[0], model_state
        out, new_state = forward(params, to_state(model_state), x, key)
        return out, (model_state if key is None else _like(to_dict(new_state), dtypes))

    def trainable(key):
        built = build(key)
        built = built[0] if isinstance(built, tuple) else built
        if stateful:
            built = eqx.nn.delete_init_state(built)
        return eqx.partition(built, eqx.is_inexact_array)[0]

    parts = _assemble(apply, loss, params0, state0, jnp.asarray(sample_x), "equinox_parts")
    draw = None if build is None else _drawing(trainable, params0)
    return parts, draw, type(model).__name__


def _state_codec(eqx, model, state):
    """``(to_dict, to_state)`` between an ``eqx.nn.State`` and a plain dict ``{entry name:
    value}`` (a dict compares, averages and saves like any other model state); an entry is named
    by the path of its ``StateIndex`` in the model (``"Net.bn.ema_state_index"``)."""
    is_index = lambda node: isinstance(node, eqx.nn.StateIndex)
    where = {index.marker: type(model).__name__ + jax.tree_util.keystr(path)
             for path, index in jax.tree_util.tree_flatten_with_path(model, is_leaf=is_index)[0]
             if is_index(index)}
    treedef = jax.tree.structure(state)
    names = [where.get(k, str(k)) for k in treedef.node_data()[1]]
    if len(set(names)) < len(names):
        names = [f"{i}:{name}" for i, name in enumerate(names)]

    def to_dict(st):
        return dict(zip(names, st.tree_flatten()[0]))

    def to_state(values):
        return jax.tree.unflatten(treedef, jax.tree.leaves([values[n] for n in names]))

    return to_dict, to_state


def _like(tree, dtypes):
    """``tree`` with the leaf ``dtypes`` of the initial state (integer / boolean state leaves
    that a worker average turned into floats come back as their own type)."""
    return jax.tree.map(lambda a, d: jnp.asarray(a).astype(d), tree, dtypes)


# ----------------------------------------------------------------------------- problems


def _sample_x(worker_data, sample_x, where):
    if not isinstance(worker_data, dict) or not {"x", "y"} <= set(worker_data):
        got = sorted(worker_data) if isinstance(worker_data, dict) else type(worker_data).__name__
        raise ValueError(f"{where}: worker_data must be a dict with keys 'x' and 'y' (leaves "
                         f"[n_workers, m, ...]); got {got}.")
    if sample_x is None:
        x = np.asarray(worker_data["x"])
        if x.ndim < 2:
            raise ValueError(f"{where}: worker_data['x'] must have shape [n_workers, m, ...]; "
                             f"got {x.shape}.")
        sample_x = x[0, :1]
    return sample_x


def _problem(built, worker_data, library, *, init, seed, test_data, batch_size,
             custom_kwargs):
    from .custom import custom

    (loss_fn, params0, state0, metrics_fn), draw, cls = built
    init = one_of("init", init, ("same", "independent"))
    if init == "independent" and draw is None:
        raise ValueError(f'init="independent" draws each worker\'s initial parameters, which a '
                         f"built {cls} instance cannot do; give model as a function that builds "
                         f"it ({_BUILDERS[library]}), or use init=\"same\".")
    # params0 goes to custom() as a function of the key: a parameter pytree may itself be
    # callable (an Equinox module), which custom() would take for a function.
    init_fn = draw if init == "independent" else (lambda key: params0)
    return custom(loss_fn, init_fn, worker_data, model_state=state0, init=init, seed=seed,
                  batch_size=batch_size, test_data=test_data, test_metrics=metrics_fn,
                  name=f"{library}/{cls}", **custom_kwargs)


_BUILDERS = {"flax": "rngs -> nnx.Module", "equinox": "key -> eqx.Module"}


def from_flax(model, worker_data, *, sample_x=None, test_data=None, batch_size=None,
              seed: int = 0, loss="cross_entropy", init: str = "same",
              train_kwarg: str | None = "train", rng_collections=("dropout",), **custom_kwargs):
    """A Flax model (nnx or linen) on per-worker data, as a :class:`decsim.Problem`.

    Args:
      model: an ``nnx.Module``, a function ``rngs -> nnx.Module``, or a ``linen.Module`` (see
        :func:`flax_parts`).
      worker_data: ``{"x": [n_workers, m, ...], "y": [n_workers, m, ...]}``.
      sample_x: an input batch for initialization; default worker 0's first sample.
      test_data: optional ``{"x": [m_test, ...], "y": [m_test, ...]}``; ``test_loss`` and
        ``test_accuracy`` are reported (evaluation mode).
      batch_size: samples per stochastic gradient per worker; ``None``: full local batch.
      seed: the initialization seed (linen modules and nnx builder functions; with
        ``init="independent"``, worker i draws from ``split(PRNGKey(seed), n)[i]``).
      loss, train_kwarg, rng_collections: as in :func:`flax_parts`.
      init: ``"same"`` (every worker starts from the model's parameters) or ``"independent"``
        (a linen module or an nnx builder function, initialized once per worker).
      **custom_kwargs: passed to :func:`decsim.problems.custom` (``counts``, ``sampling``,
        ``model_state_mixing``, ``eval_batch_size``, ...).

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from decsim.problems.adapters import from_flax
        >>> data = {"x": np.ones((4, 16, 8), np.float32), "y": np.zeros((4, 16), np.int32)}
        >>> prob = from_flax(nnx.Linear(8, 3, rngs=nnx.Rngs(0)), data, batch_size=4)
        >>> prob.name, prob.n_workers
        ('flax/Linear', 4)
    """
    sample_x = _sample_x(worker_data, sample_x, "from_flax")
    built = _flax(model, sample_x, seed, loss, train_kwarg, rng_collections)
    return _problem(built, worker_data, "flax", init=init, seed=seed, test_data=test_data,
                    batch_size=batch_size, custom_kwargs=custom_kwargs)


def from_equinox(model, worker_data, *, sample_x=None, test_data=None, batch_size=None,
                 seed: int = 0, loss="cross_entropy", init: str = "same", state=None,
                 stateful: bool | None = None, **custom_kwargs):
    """An Equinox model (per example; see :func:`equinox_parts`) as a :class:`decsim.Problem`.

    Args:
      model: an ``eqx.Module``, the ``(model, state)`` pair of ``eqx.nn.make_with_state``, or a
        function ``key -> model`` / ``key -> (model, state)``.
      worker_data: ``{"x": [n_workers, m, ...], "y": [n_workers, m, ...]}``.
      sample_x: an input batch used to check the model; default worker 0's first sample.
      test_data: optional ``{"x": [m_test, ...], "y": [m_test, ...]}`` (evaluation mode).
      batch_size: samples per stochastic gradient per worker; ``None``: full local batch.
      seed: the key of a builder function (with ``init="independent"``, worker i builds from
        ``split(PRNGKey(seed), n)[i]``).
      loss, state, stateful: as in :func:`equinox_parts`.
      init: ``"same"`` or ``"independent"`` (a builder function, called once per worker).
      **custom_kwargs: passed to :func:`decsim.problems.custom` (``counts``, ``sampling``, ...).

    Example:
        >>> import jax, numpy as np, equinox as eqx
        >>> from decsim.problems.adapters import from_equinox
        >>> data = {"x": np.ones((4, 16, 8), np.float32), "y": np.zeros((4, 16), np.int32)}
        >>> prob = from_equinox(lambda key: eqx.nn.MLP(8, 3, 4, 1, key=key), data,
        ...                     init="independent")
        >>> prob.name, prob.n_workers
        ('equinox/MLP', 4)
    """
    sample_x = _sample_x(worker_data, sample_x, "from_equinox")
    built = _equinox(model, sample_x, state, stateful, loss, seed)
    return _problem(built, worker_data, "equinox", init=init, seed=seed, test_data=test_data,
                    batch_size=batch_size, custom_kwargs=custom_kwargs)

"""Data augmentation for image batches ``[b, H, W, C]``, in pure JAX.

Every function takes a PRNG key and one batch, draws an independent transformation for every
image, and is jittable and vmappable: under ``jax.vmap`` over a stacked worker axis (keys
``[n]``, images ``[n, b, H, W, C]``) every worker augments its own batch with its own key. The
static arguments (``padding``, ``flip``) are checked on the host; the images' dtype is kept.

Zero padding pads with 0, which is the mean pixel for images standardized by
:func:`decsim.problems.images.load_images` (and black for raw pixels).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from decsim.problems.augment import augment
    >>> images = jnp.ones((2, 8, 8, 3))
    >>> augment(jax.random.key(0), images, crop_padding=2).shape
    (2, 8, 8, 3)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._checks import boolean, integer

__all__ = ["random_crop", "random_flip", "augment"]


def _check(key, images) -> None:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"images must be one batch [b, H, W, C] (4 axes); got shape "
                         f"{shape}. For stacked workers [n, b, H, W, C], jax.vmap over the "
                         "worker axis with one key per worker.")
    key_shape = getattr(key, "shape", None)
    typed = hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if key_shape is None or (typed and key_shape != ()) or (not typed and len(key_shape) != 1):
        raise ValueError(f"key must be one PRNG key (jax.random.key(seed)); got shape "
                         f"{key_shape}. For a batch of keys, jax.vmap over them.")


def random_crop(key, images, padding: int = 4):
    """Zero-pad every image by ``padding`` pixels on each side, then crop it back to ``H x W``
    at an offset ``(dy, dx)`` drawn uniformly from ``{0 .. 2 padding}²``, independently per
    image (the CIFAR "random crop"). ``padding=0`` returns ``images`` unchanged.

    Args:
      key: a PRNG key.
      images: ``[b, H, W, C]``.
      padding: pixels added on each side, an integer >= 0.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
        >>> y = random_crop(jax.random.key(3), x, padding=1)
        >>> y.shape, bool(jnp.all(random_crop(jax.random.key(3), x, padding=0) == x))
        ((1, 4, 4, 1), True)
    """
    padding = integer("padding", padding, min=0)
    _check(key, images)
    if padding == 0:
        return images
    b, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)
    zero = jnp.zeros((), offsets.dtype)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], zero), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def random_flip(key, images):
    """Mirror every image left-right (along ``W``) with probability 1/2, independently per
    image. The same key gives the same choices, so flipping twice with one key is the identity.

    Args:
      key: a PRNG key.
      images: ``[b, H, W, C]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.arange(12.0).reshape(3, 1, 4, 1)
        >>> k = jax.random.key(0)
        >>> bool(jnp.all(random_flip(k, random_flip(k, x)) == x))
        True
    """
    _check(key, images)
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def augment(key, images, *, crop_padding: int = 4, flip: bool = True):
    """:func:`random_crop` then :func:`random_flip`, with two keys split from ``key``.

    Args:
      key: a PRNG key.
      images: ``[b, H, W, C]``.
      crop_padding: ``padding`` of the crop (``0``: no crop).
      flip: apply the random horizontal flip.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.zeros((4, 2, 8, 8, 1))               # 4 workers, a batch of 2 each
        >>> keys = jax.random.split(jax.random.key(0), 4)  # one key per worker
        >>> jax.vmap(augment)(keys, x).shape
        (4, 2, 8, 8, 1)
    """
    crop_padding = integer("crop_padding", crop_padding, min=0)
    flip = boolean("flip", flip)
    _check(key, images)
    crop_key, flip_key = jax.random.split(key)
    if crop_padding:
        images = random_crop(crop_key, images, crop_padding)
    if flip:
        images = random_flip(flip_key, images)
    return images

"""A cheap counter-based PRNG implementation for training on CPU (dropout, init, shuffles).

Written by hand for performance: Threefry (JAX's default) costs about a hundred integer
ops per pair of words and is compiled into a separate loop for every random tensor; on
the CPU, with the Feature AAN's many tiny dropout tensors, it took about 40% of a
training step and of its compile time. Here a key is two uint32 words and every
draw is two rounds of a 32-bit integer mixer (lowbias32, C. Wellons) over the key and
the element's index, which XLA fuses into the op that uses the bits. Each element is a
pure function of (key, index), so a vmapped draw equals the unbatched one: a run's
dropout masks do not depend on which other runs train beside it. Not for cryptography;
its statistics are those of a good hash, plenty for dropout masks and initialization.

    key = jax.random.key(0, impl=prng.HASH32)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.extend import random as jex_random

_GOLDEN = 0x9E3779B9


def _u32(x) -> jax.Array:
  return jnp.asarray(x).astype(jnp.uint32)


def _mix(x: jax.Array) -> jax.Array:
  """lowbias32: a bijective 32-bit mixer with low bias."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _hash(key: jax.Array, counter: jax.Array) -> jax.Array:
  """One uint32 per counter, keyed by both key words."""
  # For a fixed key this is a bijection of the counter (each value drawn once per 2**32).
  x = _mix(counter * jnp.uint32(_GOLDEN) + key[0])
  return _mix(x ^ key[1])


def _seed(seed) -> jax.Array:
  s = jnp.asarray(seed)
  lo = _u32(s)
  hi = _u32(s >> 32) if s.dtype.itemsize == 8 else jnp.uint32(0)
  k0 = _mix(lo ^ jnp.uint32(0x85EBCA6B))
  return jnp.stack([k0, _mix(_mix(hi ^ jnp.uint32(0x27D4EB2F)) + k0)])


def _fold_in(key: jax.Array, data) -> jax.Array:
  d = _mix(_u32(data) + jnp.uint32(_GOLDEN))
  k0 = _hash(key, d)
  return jnp.stack([k0, _mix(k0 ^ key[1] ^ jnp.uint32(0xC2B2AE35))])


def _split(key: jax.Array, shape) -> jax.Array:
  n = math.prod(shape)
  c = jnp.arange(n, dtype=jnp.uint32) + jnp.uint32(0x632BE5AB)  # apart from fold_in's data
  k0 = _hash(key, c)
  k1 = _mix(k0 ^ key[1] ^ jnp.uint32(0x165667B1))
  return jnp.stack([k0, k1], axis=-1).reshape(tuple(shape) + (2,))


def _random_bits(key: jax.Array, bit_width: int, shape) -> jax.Array:
  n = math.prod(shape)
  if bit_width == 64:
    c = jnp.arange(2 * n, dtype=jnp.uint32).reshape(n, 2)
    w = _hash(key, c).astype(jnp.uint64)
    return ((w[:, 0] << 32) | w[:, 1]).reshape(shape)
  bits = _hash(key, jnp.arange(n, dtype=jnp.uint32)).reshape(shape)
  if bit_width == 32:
    return bits
  return (bits >> (32 - bit_width)).astype(jnp.dtype(f"uint{bit_width}"))


HASH32 = jex_random.define_prng_impl(
    key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits, fold_in=_fold_in,
    name="hash32", tag="h32")

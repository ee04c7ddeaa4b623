"""Hand-written XLA:CPU kernels: the Feature AAN's encoder, fused, forward and backward.

Why: on a CPU, XLA runs the tiny encoder (5 tokens of width 8) as ~1,000 small kernels
per training step, which made it most of a step (docs/training.md, Speed). `encoder.cc` instead
takes 8 samples at a time through all layers, one per SIMD lane. It is C++ compiled on first use with the
system's C++ compiler against the XLA FFI headers that jaxlib ships, cached in
`$AAN_KERNEL_CACHE` or `~/.cache/aan_jax/kernels` (keyed by source, jaxlib version and
CPU flags), and registered as an XLA FFI target. Without a compiler, or when the build
fails, `available()` is False with the reason in `unavailable_reason()`, and callers use
the pure-JAX encoder.

The models select it at trace time, never by a field (aan_jax.models.layers.encoder_impl):

    from aan_jax.models import kernels
    from aan_jax.models import layers
    with layers.encoder_impl(kernels.resolve("auto")):   # "cpu_kernel" on a CPU if it builds
      y = model.apply(variables, features, deterministic=False, rngs={"dropout": key})

Its dropout masks are the XLA encoder's (aan_jax.models.layers.encoder_dropout_masks) and its
rates are operands, so they may be traced (one per run under vmap).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "encoder.cc")
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno"]
_FFN = {"relu": 0, "tanh_residual": 1}
_EPS = 1e-6
_lock = threading.Lock()
_state: dict = {}


def cache_dir() -> str:
  return os.environ.get("AAN_KERNEL_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "aan_jax", "kernels")


def _cpu_flags() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return line
  except OSError:
    pass
  return platform.processor()


def library_path() -> str:
  """Where the compiled kernel for this source, jaxlib and CPU lives (built or not)."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  with open(_SOURCE, "rb") as f:
    h.update(f.read())
  for part in (jaxlib.__version__, " ".join(_FLAGS), platform.machine(), _cpu_flags()):
    h.update(part.encode())
  return os.path.join(cache_dir(), f"aan_encoder_{h.hexdigest()[:16]}.so")


def build(verbose: bool = False) -> str:
  """Compiles the kernel into the cache if it is not there yet; returns its path."""
  path = library_path()
  if os.path.exists(path):
    return path
  cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
  if not cxx:
    raise RuntimeError("no C++ compiler found (g++, c++ or clang++; or set $CXX); "
                       "install one (e.g. `apt install g++`) for the fused CPU encoder")
  folder = os.path.dirname(path)
  try:
    os.makedirs(folder, exist_ok=True)
    # Build to a temporary name and rename, so that concurrent builds never see half a file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
  except OSError as e:
    raise RuntimeError(f"cannot write the kernel cache {folder!r} ({e}); set "
                       "$AAN_KERNEL_CACHE to a writable folder") from e
  cmd = [cxx, *_FLAGS, f"-I{jax.ffi.include_dir()}", _SOURCE, "-o", tmp]
  if verbose:
    print(" ".join(cmd), flush=True)
  t0 = time.time()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  except OSError as e:
    os.unlink(tmp)
    raise RuntimeError(f"cannot run the C++ compiler {cxx!r} ({e}); install g++ or set "
                       "$CXX") from e
  if proc.returncode != 0:
    os.unlink(tmp)
    # The compiler's errors first: jaxlib's headers add pages of warnings around them.
    errors = [l for l in proc.stderr.splitlines() if " error" in l or l.startswith("error")]
    detail = "\n".join(errors[:20]) or proc.stderr[-3000:] or proc.stdout[-3000:]
    raise RuntimeError(f"compiling {_SOURCE} failed (exit code {proc.returncode}: "
                       f"{' '.join(cmd)}):\n{detail}")
  os.replace(tmp, path)
  # A cold start says what it did: later processes load the library in milliseconds.
  print(f"built the fused CPU encoder once for this machine in {time.time() - t0:.1f} s "
        f"({path})", file=sys.stderr, flush=True)
  return path


def _load() -> bool:
  with _lock:
    if "ok" in _state:
      return _state["ok"]
    try:
      lib = ctypes.cdll.LoadLibrary(build())
      for name in ("AanEncoderFwd", "AanEncoderBwd"):
        jax.ffi.register_ffi_target(f"aan_{name}", jax.ffi.pycapsule(getattr(lib, name)),
                                    platform="cpu")
      _state.update(ok=True, lib=lib, reason="")
    except (OSError, RuntimeError, AttributeError) as e:
      _state.update(ok=False, reason=str(e))
    return _state["ok"]


def _turned_off() -> bool:
  return os.environ.get("AAN_KERNELS", "").lower() in ("0", "off", "false")


def available() -> bool:
  """True when the fused encoder is compiled (or compiles now) and registered."""
  return not _turned_off() and _load()


def unavailable_reason() -> str:
  if _turned_off():
    return "turned off by AAN_KERNELS"
  _load()
  return _state.get("reason", "")


def resolve(setting: str) -> str:
  """"xla" or "cpu_kernel" for an engine's `encoder_impl` setting: "auto" uses the kernel
  when JAX's default backend is the CPU and the kernel builds (AAN_KERNELS=off turns that
  off), else XLA's encoder; "cpu_kernel" insists (an error saying why it cannot); "xla"."""
  if setting == "xla":
    return "xla"
  if setting not in ("auto", "cpu_kernel"):
    raise ValueError(f"encoder_impl must be 'auto', 'xla' or 'cpu_kernel'; got {setting!r}")
  on_cpu = jax.default_backend() == "cpu"
  if setting == "cpu_kernel":
    if not on_cpu:
      raise ValueError(f"encoder_impl='cpu_kernel' needs the CPU backend; JAX's default "
                       f"is {jax.default_backend()!r}: use 'auto' or 'xla'")
    if not available():
      raise RuntimeError(f"encoder_impl='cpu_kernel' but the fused CPU encoder is not "
                         f"available: {unavailable_reason()}")
    return "cpu_kernel"
  return "cpu_kernel" if on_cpu and available() else "xla"


def _require() -> None:
  if not available():
    raise RuntimeError(f"the fused CPU encoder is not available: {unavailable_reason()}")


def layer_size(d_model: int) -> int:
  """Parameters per layer in the packed layout (see encoder.cc)."""
  return 5 * d_model * d_model + 9 * d_model  # 5 matrices, 5 biases, 2 norms' scale and bias


def _attrs(num_layers, num_heads, ffn):
  if ffn not in _FFN:
    raise ValueError(f"unknown feed-forward kind {ffn!r}; use 'relu' or 'tanh_residual'")
  return dict(num_layers=np.int64(num_layers), num_heads=np.int64(num_heads),
              ffn=np.int64(_FFN[ffn]), eps=np.float32(_EPS))


def _fwd_call(x, params, seed, rates, attrs):
  out = jax.ShapeDtypeStruct(x.shape, jnp.float32)
  return jax.ffi.ffi_call("aan_AanEncoderFwd", out, vmap_method="broadcast_all")(
      x, params, seed, rates, **attrs)


def _bwd_call(x, params, seed, rates, dy, attrs):
  outs = (jax.ShapeDtypeStruct(x.shape, jnp.float32),
          jax.ShapeDtypeStruct(params.shape, jnp.float32))
  return jax.ffi.ffi_call("aan_AanEncoderBwd", outs, vmap_method="broadcast_all")(
      x, params, seed, rates, dy, **attrs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _encoder(x, params, seed, rates, attrs_items):
  return _fwd_call(x, params, seed, rates, dict(attrs_items))


def _encoder_fwd(x, params, seed, rates, attrs_items):
  return _fwd_call(x, params, seed, rates, dict(attrs_items)), (x, params, seed, rates)


def _encoder_bwd(attrs_items, res, dy):
  x, params, seed, rates = res
  dx, dparams = _bwd_call(x, params, seed, rates, dy, dict(attrs_items))
  # The rates are hyperparameters: no gradient flows to them.
  return dx, dparams, np.zeros(seed.shape, jax.dtypes.float0), jnp.zeros_like(rates)


_encoder.defvjp(_encoder_fwd, _encoder_bwd)


def encoder(x, params, seed, *, num_layers: int, num_heads: int, ffn: str = "relu",
            rate=0.0, attention_rate=0.0):
  """The fused encoder: x (batch, tokens, d) -> (batch, tokens, d), differentiable in x
  and params. params: (num_layers * layer_size(d) + 2 d,) packed as in encoder.cc;
  seed: uint32 scalar for the dropout masks (ignored when both rates are 0); rate
  (residual and feed-forward dropout) and attention_rate: floats or traced scalars."""
  _require()
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 3:
    raise ValueError(f"x must be (batch, tokens, d_model); got shape {x.shape}")
  d = x.shape[-1]
  want = num_layers * layer_size(d) + 2 * d
  if params.shape != (want,):
    raise ValueError(f"params must have shape ({want},) for d_model={d}, "
                     f"{num_layers} layers; got {params.shape}")
  attrs = _attrs(num_layers, num_heads, ffn)
  # One seed and one pair of rates per run: vmap adds the run axis to each.
  seed = jnp.asarray(seed, jnp.uint32).reshape(1)
  rates = jnp.stack([jnp.asarray(rate, jnp.float32).reshape(()),
                     jnp.asarray(attention_rate, jnp.float32).reshape(())])
  return _encoder(x, jnp.asarray(params, jnp.float32), seed, rates,
                  tuple(sorted(attrs.items())))


def pack_encoder_params(p: dict, num_layers: int) -> jax.Array:
  """aan_jax.models.layers.Encoder's parameters (layer_0 ... and norm) in encoder.cc's layout.

  That layout is each layer's leaves in `jax.flatten_util.ravel_pytree` order, then the
  final norm's: the order in which the engine's flat parameter vector already holds them
  (for up to 10 layers, where "layer_i" sort as numbers), so that XLA turns this
  concatenation of slices of that vector into one slice (and its gradient into one
  update): ~0.5 s less to compile the training program than with a layout of its own.
  """
  return ravel_pytree([*(p[f"layer_{i}"] for i in range(num_layers)), p["norm"]])[0].astype(
      jnp.float32)


def dropout_probe(n: int, rate: float, seed: int, base: int = 0) -> np.ndarray:
  """The kernel's dropout multipliers for counters base .. base + n * lanes - 1 (tests)."""
  _require()
  fn = _state["lib"].AanDropoutProbe
  fn.restype = ctypes.c_int
  lanes = 64  # an upper bound on the kernel's lanes
  out = np.zeros(n * lanes, np.float32)
  got = fn(ctypes.c_int64(n), ctypes.c_float(rate), ctypes.c_uint32(seed),
           ctypes.c_uint32(base), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
  return out[:n * got]

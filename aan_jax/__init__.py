"""aan-jax: AttendAffectNet (Thao et al. 2020) in JAX/Flax.

Submodules are imported lazily by the user (`from aan_jax import models`); nothing here
does I/O or imports torch/tensorflow.
"""

__version__ = "0.1.0"

"""Import of released checkpoints, never executing code from a file: the authors' AAN
models (torch's legacy pickles, `torch_pickle`), VAANet's, and FER-2013's Keras HDF5.

    from aan_jax import convert
    model, params = convert.from_attendaffectnet("released/CHI_arousal_....pth")
"""

from aan_jax.convert.attendaffectnet import (  # noqa: F401
    ConversionError, from_attendaffectnet, from_fer, from_state_dict, from_vaanet, main)

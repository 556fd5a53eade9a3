"""Encoder registry: frozen foundation-model encoders that turn uint8 tiles into four NCHW feature levels.

``get_spec(name)`` gives the declarative row (source, levels, preprocessing, dims/grids, licence);
``build_encoder(spec, weights)`` gives a ``FrozenEncoder`` whose forward returns the four levels.
"""

from embedstore.encoders.frozen import FrozenEncoder, build_encoder
from embedstore.encoders.registry import get_spec, list_specs
from embedstore.encoders.spec import EncoderSpec

__all__ = ["EncoderSpec", "FrozenEncoder", "build_encoder", "get_spec", "list_specs"]

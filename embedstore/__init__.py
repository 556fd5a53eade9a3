"""embedstore: run frozen encoders once, keep their multi-level token grids in Zarr, train decoders from them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("embedstore")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

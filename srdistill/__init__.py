"""srdistill: data and evaluation backbone for one-step diffusion super-resolution."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("srdistill")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

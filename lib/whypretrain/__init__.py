"""whypretrain: an open, re-executable study of why pre-training helps downstream classification.

Data flows one way: data -> models -> training -> masking -> interactions -> knowledge -> charts.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("whypretrain")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"

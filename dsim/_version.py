"""dsim's version, as installed (or a placeholder when run from a bare source tree)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsim")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

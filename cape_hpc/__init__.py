"""cape_hpc: capability-coupling analysis (CAPE) of language models."""
from cape_kernels import __version__  # the one version string (kernels/cape_kernels/__init__.py)

__all__ = ["__version__"]

"""cape_hpc: capability-coupling analysis (CAPE) of language models."""
__version__ = "0.1.0"

"""cape_hpc: capability-coupling analysis (CAPE) of language models, with HPC kernels."""
import re
from pathlib import Path

from setuptools import setup

# the one version string lives in kernels/__init__.py (cape_kernels.__version__); cape_hpc reuses it.
# cape_kernels is its own distribution (kernels/pyproject.toml): install it first, `pip install -e ./kernels`
# (scripts/install_deps.sh does), then this package, which depends on that exact version.
VERSION = re.search(r'^__version__ = "([^"]+)"', Path(__file__).with_name("kernels").joinpath("__init__.py")
                    .read_text(), re.M).group(1)

setup(
    name="cape_hpc",
    version=VERSION,
    description="Capability-coupling analysis of language models: kernels, analysis, sweeps, reports",
    python_requires=">=3.10",
    packages=[
        "cape_hpc",
        "cape_hpc.io",
        "cape_hpc.analysis",
        "cape_hpc.stats",
        "cape_hpc.dynamics",
        "cape_hpc.audit",
        "cape_hpc.models",
        "cape_hpc.internals",
        "cape_hpc.steering",
        "cape_hpc.sweep",
        "cape_hpc.report",
        "cape_hpc.commands",
    ],
    package_data={"cape_hpc.report": ["assets/*"]},
    install_requires=[
        f"cape_kernels=={VERSION}",  # kernels/ (torch, numba)
        "numpy>=1.24",
        "scipy>=1.10",
        "pandas>=2.0",
        "numba>=0.59",
        "h5py>=3.8",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "plotly>=5.0",  # report: its bundled plotly.min.js is inlined into report.html (offline)
        "tqdm>=4.60",
        "pysindy>=2.0",
        "torch>=2.4",
        "transformers>=4.45",
        "gguf>=0.10",
        "accelerate>=0.30",
        "safetensors>=0.4",
    ],
    extras_require={
        # CUDA 12 wheels run on CUDA 12 and 13 drivers; on CUDA 13 toolkits cupy-cuda13x works as well
        "gpu": ["triton>=3.0", "cupy-cuda12x>=13"],
        # mpich 5.0.x (UCX) fails MPI_Init under `srun --mpi=pmi2` (the UCX address does not survive the
        # PMI2 exchange: "failed to unpack address, invalid bandwidth"); 4.3 works under srun and mpiexec
        "mpi": ["mpi4py>=3.1", "mpich>=4.1,<5"],
        # the tools benchmarks/bench_internals.py (and the steering benchmark) compare against
        "peers": ["nnsight>=0.4", "transformer-lens>=2", "repeng>=0.4", "steering-vectors>=0.12"],
        "dev": [
            "pytest>=8",
            "pytest-benchmark>=4",
            "pytest-timeout>=2",
            "hypothesis>=6",
            "playwright>=1.40",
            "triton>=3.0",
            "mpi4py>=3.1",
            "mpich>=4.1,<5",
        ],
    },
    entry_points={"console_scripts": ["cape=cape_hpc.cli:main"]},
)

"""cape_hpc: capability-coupling analysis (CAPE) of language models, with HPC kernels.

Two distributions are built from this repository: ``cape_kernels`` (``kernels/pyproject.toml``, the
package ``kernels/cape_kernels/``) and this one, ``cape_hpc``, which depends on that exact version.
Install the kernels first (``pip install ./kernels .``, or ``scripts/install_deps.sh`` for development).

The ranges below are the compatible ones; each lower bound is one a test run has used
(``make test-min``, CONTRIBUTING.md "Dependencies").  What ``make`` and CI install is pinned by
``requirements/lock.txt`` (``make lock``).
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# the one version string lives in kernels/cape_kernels/__init__.py; cape_hpc reuses it
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    (HERE / "kernels" / "cape_kernels" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="cape_hpc",
    version=VERSION,
    description="Capability-coupling analysis of language models: kernels, analysis, sweeps, reports",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # every package under cape_hpc/, found (a new subpackage cannot be forgotten), and the shipped data:
    # the repository's data/ becomes the package data cape_hpc/data/ (found by cape_hpc.io.data.data_dir)
    packages=find_packages(include=["cape_hpc", "cape_hpc.*"]) + ["cape_hpc.data"],
    package_dir={"cape_hpc.data": "data"},
    package_data={
        "cape_hpc.report": ["assets/*"],
        "cape_hpc.data": ["*.csv", "*.yaml", "*.jsonl", "*.md", "prompts/*.jsonl"],
    },
    install_requires=[
        f"cape_kernels=={VERSION}",  # kernels/ (torch, numba)
        "numpy>=2.0",
        "scipy>=1.15",
        "pandas>=2.2.2",
        "numba>=0.60",
        "h5py>=3.11",
        "pyyaml>=6.0.1",
        "matplotlib>=3.8.4",
        "plotly>=5.0",  # report: its bundled plotly.min.js is inlined into report.html (offline)
        "tqdm>=4.60",
        "pysindy>=2.1",
        "torch>=2.11",
        "transformers>=5.17",
        "gguf>=0.16.2",
        "accelerate>=1.1",
        "safetensors>=0.8",
    ],
    extras_require={
        # CUDA 12 wheels run on CUDA 12 and 13 drivers; on CUDA 13 toolkits cupy-cuda13x works as well
        "gpu": ["triton>=3.6", "cupy-cuda12x>=13.2"],
        # mpich 5.0.x (UCX) fails MPI_Init under `srun --mpi=pmi2` (the UCX address does not survive the
        # PMI2 exchange: "failed to unpack address, invalid bandwidth"); 4.3 works under srun and mpiexec
        "mpi": ["mpi4py>=3.1", "mpich>=4.1,<5"],
        # the tools benchmarks/bench_internals.py (and the steering benchmark) compare against
        "peers": ["nnsight>=0.4", "transformer-lens>=2", "repeng>=0.4", "steering-vectors>=0.12"],
        # a sweep's scores: section (lm_eval.simple_evaluate on the loaded model; cape_hpc/sweep/scores.py)
        "scores": ["lm-eval>=0.4.13"],
        "dev": [
            "pytest>=8",
            "pytest-benchmark>=4",
            "pytest-timeout>=2",
            "hypothesis>=6",
            "playwright>=1.40",
            "triton>=3.6",
            "mpi4py>=3.1",
            "mpich>=4.1,<5",
            "build>=1.0",
            "twine>=5",
            "uv>=0.5",  # make lock, make test-min
        ],
    },
    entry_points={"console_scripts": ["cape=cape_hpc.cli:main"]},
)

"""Nothing in the repository shadows a dependency.  transformers >= 5.25 requires the Hugging Face
package ``kernels`` and imports it when it loads a model; a regular package of that name at the root
(the kernel library lived in ``kernels/__init__.py`` until it moved to ``kernels/cape_kernels/``)
broke every model load whenever the root was on ``sys.path``: pytest from the root, ``python -m
cape_hpc.cli`` from the root, the MPI ranks."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(f"""
    import sys
    from pathlib import Path
    root = Path({str(ROOT)!r}).resolve()
    sys.path.insert(0, str(root))          # the root first, as when pytest or python -m runs there
    import kernels                         # the Hugging Face package, not a folder of the repository
    where = Path(kernels.__file__).resolve()
    assert "site-packages" in where.parts and not where.is_relative_to(root / "kernels"), where
    assert hasattr(kernels, "CUDAProperties") and hasattr(kernels, "kernelize"), dir(kernels)
    import transformers.integrations.hub_kernels as hk   # what from_pretrained imports
    from cape_hpc.models import load_model
    m = load_model("smollm2-135m")                       # real weights, through transformers
    import torch
    with torch.no_grad():
        logits = m.model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape[:2] == (1, 3) and torch.isfinite(logits).all()
    print("NO-SHADOW-OK", where)
""")


def test_root_first_on_sys_path_imports_the_hf_kernels_and_loads_a_model():
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "NO-SHADOW-OK" in r.stdout, r.stderr[-3000:]


def test_no_root_folder_is_an_importable_package_but_cape_hpc():
    """A regular package at the root is importable whenever the root is on sys.path: only cape_hpc may be."""
    found = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    assert found == ["cape_hpc"], found
    spec = importlib.util.find_spec("cape_kernels")
    assert spec is not None and Path(spec.origin).resolve().parent.name == "cape_kernels"

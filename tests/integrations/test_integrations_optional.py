"""`import geomlat` (and its core subpackages) must not import any optional integration package (issue 14).

torch_geometric itself imports part of `transformers` (torch_geometric.llm) when it is installed, so the test
compares with the modules already loaded by geomlat's own dependencies: geomlat must add none."""
import subprocess
import sys

OPTIONAL = ("lightning", "pytorch_lightning", "transformers", "timm", "torchdistill", "torchvision")

CODE = f"""
import sys
def optional():
    return {{m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r}}}
import torch, torch_geometric, torch_geometric.data, torch_geometric.utils, pygsp, scipy, numpy, sklearn
before = optional()
import geomlat, geomlat.losses, geomlat.engine, geomlat.analysis, geomlat.capture, geomlat.integrations
print(sorted(optional() - before))
print(sorted(m for m in before if m.split('.')[0] != 'transformers'))
"""


def test_core_import_pulls_no_integration_package():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=300)
    added, other = out.stdout.strip().splitlines()
    assert added == "[]", f"import geomlat imported {added}"
    assert other == "[]", f"geomlat's dependencies imported {other}"

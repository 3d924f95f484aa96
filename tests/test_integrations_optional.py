"""`import geomlat` (and its core subpackages) must not import any optional integration package (issue 14)."""
import subprocess
import sys

OPTIONAL = ("lightning", "pytorch_lightning", "transformers", "timm", "torchdistill", "torchvision")


def test_core_import_pulls_no_integration_package():
    code = (
        "import sys, geomlat, geomlat.losses, geomlat.engine, geomlat.analysis, geomlat.capture, geomlat.integrations\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stdout

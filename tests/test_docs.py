"""Every ```python block of the documentation's guides runs: the blocks of a page in order, in one namespace,
in a fresh interpreter (pages register kernels, losses and distances: a process each keeps them apart).

Blocks written as ```{code-block} python are shown and not run (a snippet that needs a process group or a
cluster); ``SHOWN_ONLY`` lists the pages allowed to have them."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ROOT / "docs" / "guides"
SHOWN_ONLY = {"distributed.md"}  # its in-loop snippet needs a process group


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(encoding="utf-8"), flags=re.S | re.M)


PAGES = sorted(p for p in GUIDES.rglob("*.md") if python_blocks(p))


def test_the_guides_have_code():
    """The pages whose code this test runs (a page renamed or a fence mistyped would drop out silently)."""
    names = {p.relative_to(GUIDES).as_posix() for p in PAGES}
    assert {"lgg.md", "own_loop.md", "huggingface.md", "integrations.md", "precision.md", "extending/kernel.md",
            "extending/loss.md", "extending/distance.md", "extending/measure.md"} <= names
    shown = {p.relative_to(GUIDES).as_posix() for p in GUIDES.rglob("*.md") if "```{code-block} python" in p.read_text()}
    assert shown <= SHOWN_ONLY, f"pages with python code that is not run: {shown - SHOWN_ONLY}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(GUIDES).as_posix())
def test_guide_blocks_run(page, tmp_path):
    blocks = python_blocks(page)
    script = "\n".join(f"# --- block {i + 1}\n{code}" for i, code in enumerate(blocks))
    (tmp_path / "page.py").write_text(script, encoding="utf-8")
    env = {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "page.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{page.name}:\n{done.stderr[-3000:]}"

"""Every Python block of the README runs as printed, in order, from the repository's root (later blocks
use what earlier ones defined, as a reader pasting them into one session would)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_every_python_block_of_the_readme_runs():
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    assert len(blocks) >= 3, "the README's Python blocks were not found"
    # One process, one namespace: as a reader pasting the blocks into one session.
    program = "\n\n".join(f"# block {number}\n{block}" for number, block in enumerate(blocks, 1))
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'setosa'" in done.stdout and "topology: flow" in done.stdout, done.stdout[-2000:]

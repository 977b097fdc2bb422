"""Shared fixtures. Real KLUE data is read in place from ../shared (never copied into the repo)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
KLUE_DIR = SHARED / "data" / "klue-ner"
REFERENCE_MODEL_TOOL = SHARED / "tools" / "reference-model" / "make_tiny_model.py"


@pytest.fixture(scope="session")
def klue_dir() -> Path:
    """The real KLUE-NER v1.1 files; absent only on a fresh clone outside this workplace."""
    if not SHARED.exists():
        pytest.skip("../shared is absent (fresh clone outside the project workplace)")
    assert (KLUE_DIR / "dev.tsv").is_file(), f"{KLUE_DIR} lacks dev.tsv although ../shared exists"
    return KLUE_DIR


@pytest.fixture(scope="session")
def reference_model(klue_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's reference tiny model (WordPiece 8,000 + random 4x256 BERT), built byte-identically
    by ../shared/tools/reference-model/make_tiny_model.py (about 8 s)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("reference-model")
    subprocess.run(
        [sys.executable, str(REFERENCE_MODEL_TOOL), "--train", str(klue_dir / "train.tsv"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory):
    """The session's tiny trained run (shared: read it, copy it, never write into it)."""
    from pipeline_fixtures import trained_run_once

    return trained_run_once(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT token classifier with the KLUE labels, as a Hugging Face directory."""
    from serve_fixtures import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-ner-model"))


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model_dir: Path):
    from ner_lit.predictor import Predictor

    return Predictor.from_pretrained(tiny_model_dir)

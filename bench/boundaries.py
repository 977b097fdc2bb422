"""Exact entity boundaries: the candidate designs side by side, as ceilings and as trained models.

KLUE scores characters, and Korean fuses particles and endings to the word they follow
(``김철수는`` = ``김철수`` + ``는``). A tagger that gives one label per token can only end an
entity where a token ends, so whenever a token holds an entity's end and a particle, the
entity swallows the particle and strict entity F1 counts it wrong. This script measures the
ways out before one is kept, each against the same data and the official metric:

* ``token``: one label per token (``first_char`` rule): the baseline.
* ``token + Kiwi trim``: the same, then every entity's trailing particles / endings cut off
  by a morphological analyser (kiwipiepy): a post-processing step, no retraining.
* ``morpheme pre-split``: token tagging where every Kiwi morpheme start is also a token start
  (simulated by splitting each token's characters at morpheme starts, ``first_char`` per
  piece): what splitting the text with Kiwi before the tokenizer would at best give.
* ``char``: ``--data.tagging char``, a row of label scores per character a token owns
  (``char_slots`` rows, here 1, 2, 4 and 8): the design ner_lit adopted.

1. Alignment ceilings on KLUE dev (gold tags -> the design's labels -> characters, scored with
   ner_lit's CharMacroF1 / EntityMacroF1, the official KLUE F1 over non-space characters) for
   three tokenizers: multilingual-e5-small's SentencePiece (``--me5``), the reference
   WordPiece-8k (bench/common.py), and the quickstart's WordPiece (trained on
   ner_lit/sample/train.tsv as ``--config tiny`` trains it). Per design also the share of gold
   entities that end inside a token (or piece), and for ``char`` the share with a boundary past
   a token's last slot, which no prediction can reach.
2. Trained models (``--ceilings-only`` skips them): the reference setting
   (configs/reference.yaml) and multilingual-e5-small (configs/me5.yaml), each fitted with
   ``--data.tagging token`` then ``char`` (same seed and epochs, run after each other per model),
   every fit a child process (``python -m ner_lit fit``). Per run: dev F1c / F1e of the best
   checkpoint (``Predictor.from_checkpoint(best).predict`` on dev.tsv, entities back to
   character tags, official metric; the checkpoint's own validation scores beside them as a
   check), training sentences/s (train sentences x epochs / time inside the epochs,
   bench/train_clock.py: validation, checkpointing and model building excluded), the fit
   process's own peak RSS (bench/common.py's ``run_child``), and serve p50: one sentence per ``predict`` call over the
   first 200 dev sentences after 10 warm-up calls, in one torch thread (``--serve-threads``). The
   token run is also scored with every predicted entity Kiwi-trimmed.

    python bench/boundaries.py [--epochs N] [--me5 models/me5] [--ceilings-only]   # see bench/README.md
    python bench/boundaries.py --quick   # 96 train / dev sentences, 1 epoch, 20 dev sentences for ceilings

Results: bench/results/boundaries.json and boundaries.md (``--quick``: bench/work/quick-results).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402
from bench.boundaries_designs import (  # noqa: E402
    DEFAULT_SLOTS,
    SLOTS,
    KiwiMorphemes,
    ends_inside,
    entities_of,
    past_slots,
    presplit,
    score,
    share,
    tags_of,
    token_units,
    trimmed,
)
from bench.common import rel  # noqa: E402

NAME = "boundaries"
#: The README's example: its entities end inside tokens of every tokenizer measured here.
SHOWCASE = "김철수는 3월 5일 서울에서 삼성전자를 방문했다."
CONFIGS = {"reference": REPO / "configs" / "reference.yaml", "me5": REPO / "configs" / "me5.yaml"}
TAGGINGS = ("token", "char")
QUICK_CEILING_SENTENCES = 20
SERVE_SENTENCES, SERVE_WARMUP = 200, 10
QUICK_SERVE_SENTENCES, QUICK_SERVE_WARMUP = 20, 3
MIB = 1024 * 1024


# ================================================================================ 1. ceilings
def load_tokenizers(args) -> dict[str, tuple[Any, str]]:
    """The three tokenizers, each with a line saying where it comes from."""
    from transformers import AutoTokenizer

    from ner_lit.corpus.formats import read_corpus
    from ner_lit.data.scratch import cached_tokenizer

    ref = common.reference_model(args)
    sample = REPO / "ner_lit" / "sample" / "train.tsv"
    # as NERDataModule._scratch_tokenizer_dir does for `--config tiny` (scratch_tokenizer wordpiece, vocab 8000)
    quick_dir = cached_tokenizer([s.text for s in read_corpus(sample)], kind="wordpiece", vocab_size=8000,
                                 cache_dir=common.cache_dir() / "tokenizers")
    return {
        "me5": (AutoTokenizer.from_pretrained(str(args.me5)), f"multilingual-e5-small SentencePiece ({rel(args.me5)})"),
        "reference": (AutoTokenizer.from_pretrained(str(ref)), f"reference WordPiece-8k ({rel(ref)})"),
        "quickstart": (AutoTokenizer.from_pretrained(str(quick_dir)),
                       "quickstart scratch WordPiece (vocab_size 8000 asked; trained on ner_lit/sample/train.tsv as `--config tiny` does)"),
    }



def ceilings(args, kiwi: KiwiMorphemes, sentences) -> dict[str, Any]:
    """Every design's ceiling for every tokenizer on ``sentences``."""
    from ner_lit.alignment.aligner import Aligner
    from ner_lit.corpus.records import KLUE_LABELS

    labels = list(KLUE_LABELS)
    label2id = {t: i for i, t in enumerate(labels)}
    texts = [s.text for s in sentences]
    gold = [np.asarray([label2id[t] for t in s.tags], dtype=np.int64) for s in sentences]
    gold_spans = [entities_of(t, g, labels) for t, g in zip(texts, gold)]
    morphemes = [kiwi.of(t) for t in texts]
    morph_starts = [[m[0] for m in ms] for ms in morphemes]
    out: dict[str, Any] = {"sentences": len(sentences), "gold_entities": sum(map(len, gold_spans)), "tokenizers": {}}
    for name, (tokenizer, what) in load_tokenizers(args).items():
        print(f"  ceilings: {name}", flush=True)
        designs: dict[str, dict[str, Any]] = {}
        al = Aligner(tokenizer, labels, max_length=128, stride=32, label_rule="first_char", tagging="token")
        enc = al.encode(sentences)
        chars = [c.numpy() for c in al.decode_labels(enc, [al.token_labels(e) for e in enc])]
        inside_token = ends_inside(gold_spans, token_units(enc))
        designs["token"] = {**score(labels, texts, chars, gold), "ends_inside_unit_pct": inside_token}
        trim = [tags_of(t, trimmed(t, entities_of(t, c, labels), m), label2id) for t, c, m in zip(texts, chars, morphemes)]
        designs["token+kiwi_trim"] = {**score(labels, texts, trim, gold), "ends_inside_unit_pct": inside_token}
        # the simulation with no morpheme cut must give token tagging's own ceiling: a check of presplit()
        same, _ = presplit(enc, [[] for _ in texts], gold, al.inside, al.outside_id)
        if not all(np.array_equal(a, b) for a, b in zip(same, chars)):
            raise SystemExit(f"{name}: presplit() without morphemes differs from the Aligner's token ceiling")
        split, pieces = presplit(enc, morph_starts, gold, al.inside, al.outside_id)
        designs["morpheme_presplit"] = {**score(labels, texts, split, gold), "ends_inside_unit_pct": ends_inside(gold_spans, pieces),
                                        "pieces_per_token": sum(int(p.max(initial=-1)) + 1 for p in pieces)
                                        / max(1, sum(e.num_tokens for e in enc))}
        for k in SLOTS:
            ca = Aligner(tokenizer, labels, max_length=128, stride=32, tagging="char", char_slots=k)
            cenc = ca.encode(sentences)
            cchars = [c.numpy() for c in ca.decode_labels(cenc, [ca.token_labels(e) for e in cenc])]
            designs[f"char_{k}"] = {**score(labels, texts, cchars, gold), "ends_inside_unit_pct": inside_token,
                                    "boundary_past_slots_pct": past_slots(gold_spans, cenc, k)}
        lengths = [int(b - a) for e in enc for a, b in np.asarray(e.offsets).tolist() if b > a]
        out["tokenizers"][name] = {"tokenizer": what, "vocab_size": len(tokenizer), "tokens": sum(e.num_tokens for e in enc),
                                   "chars_per_token_mean": float(np.mean(lengths)) if lengths else 0.0,
                                   "tokens_longer_than_8_chars_pct": share([n > 8 for n in lengths]), "designs": designs}
    return out



# ================================================================================ 2. trained models
def fit(model: str, tagging: str, epochs: int, model_dir: Path, data: Path, work: Path, quick: bool,
        extra: list[str]) -> dict[str, Any]:
    """``python -m ner_lit fit`` of the recipe with this tagging, in a child process: wall time, peak RSS,
    the train clock, the best checkpoint."""
    from ner_lit.checkpoint.runs import resolve_checkpoint

    tag = f"{model}-{tagging}"
    fit_args = ["--config", str(CONFIGS[model]), "--model.pretrained", str(model_dir), "--data.tokenizer", str(model_dir),
                "--data.data_dir", str(data), "--data.cache_dir", str(common.cache_dir()), "--data.tagging", tagging,
                "--trainer.max_epochs", str(epochs), *extra]
    run = common.clocked_fit(fit_args, work / tag, tag, work, quick)
    run["checkpoint"] = rel(resolve_checkpoint("best", work / tag))
    return run


def evaluate(args, checkpoint: Path, dev: Path, work: Path, tag: str) -> dict[str, Any]:
    """The checkpoint's dev predictions and serve latency, measured in a child process of its own
    (so no run's model, threads or allocator state carries over to the next)."""
    settings = {"checkpoint": str(checkpoint), "dev": str(dev), "out": str(work / f"{tag}-eval.json"),
                "serve": QUICK_SERVE_SENTENCES if args.quick else SERVE_SENTENCES, "threads": args.serve_threads,
                "warmup": QUICK_SERVE_WARMUP if args.quick else SERVE_WARMUP}
    common.write_json(work / f"{tag}-eval-settings.json", settings)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_evaluate", str(work / f"{tag}-eval-settings.json")]
    run = common.run_child(cmd, work / "logs" / f"{tag}-eval.log")
    result = json.loads(Path(settings["out"]).read_text(encoding="utf-8"))
    result["process"] = run
    return result


def evaluate_child(settings_file: Path) -> None:
    """In the child: Predictor.from_checkpoint, every dev sentence predicted (one call), then serve
    latency (one sentence per call); entities and timings to the settings' ``out``."""
    import torch

    from ner_lit.corpus.klue import read_klue_tsv
    from ner_lit.inference.predictor import Predictor

    common.quiet()
    s = json.loads(settings_file.read_text(encoding="utf-8"))
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    load_s, predictor = common.timed(lambda: Predictor.from_checkpoint(s["checkpoint"]))
    texts = [x.text for x in read_klue_tsv(s["dev"])]
    predict_s, predictions = common.timed(lambda: predictor.predict(texts))
    showcase = [[e.text, e.label] for e in predictor.predict([SHOWCASE])[0].entities]
    latencies = common.one_sentence_latencies(predictor, texts, s["warmup"], s["serve"])
    common.write_json(Path(s["out"]), {
        "tagging": predictor.aligner.tagging, "torch_threads": torch.get_num_threads(),
        "char_slots": predictor.aligner.char_slots.slots if predictor.aligner.char_slots else None,
        "checkpoint_scores": dict(predictor.scores), "load_s": load_s, "dev_predict_s": predict_s, "showcase": showcase,
        "serve_sentences": len(latencies), "serve_warmup": s["warmup"], "serve_p50_ms": common.median(latencies),
        "serve_p90_ms": float(np.percentile(latencies, 90)) if latencies else float("nan"),
        "peak_rss_bytes": common.rss_bytes("VmHWM"),  # not ru_maxrss, which counts the parent's RSS (see run_child)
        "entities": [[[e.start, e.end, e.label] for e in p.entities] for p in predictions],
    })


def model_setting(args, model: str, model_dir: Path) -> dict[str, Any]:
    """A model's recipe as these runs use it: epochs, precision, seed, extra arguments."""
    cfg = common.recipe(CONFIGS[model])
    return {"config": rel(CONFIGS[model]), "model_dir": rel(model_dir),
            "seed": cfg.get("seed_everything") if args.seed is None else args.seed,
            "epochs": args.epochs or int(cfg["trainer"]["max_epochs"]), "precision": common.training_precision(cfg),
            "extra_arguments": [] if args.seed is None else ["--seed_everything", str(args.seed)], "runs": {}}


def train_and_score(args, phases: common.Phases, kiwi: KiwiMorphemes, model: str, tagging: str, setting: dict[str, Any],
                    model_dir: Path, work: Path, dev: dict[str, Any]) -> dict[str, Any]:
    """One fit, its best checkpoint's dev predictions scored as they are and Kiwi-trimmed."""
    tag, data, texts = f"{model}-{tagging}", dev["data"], dev["texts"]
    run = phases.run(f"fit {tag}", partial(fit, model, tagging, setting["epochs"], model_dir, data, work, args.quick,
                                           setting["extra_arguments"]))
    run["sentences_per_s"] = dev["n_train"] * run["clock"]["epochs"] / run["clock"]["train_s"]
    ev = phases.run(f"evaluate {tag}", partial(evaluate, args, REPO / run["checkpoint"], data / "dev.tsv", work, tag))
    if ev["tagging"] != tagging:
        raise SystemExit(f"{tag}: the checkpoint says tagging {ev['tagging']!r}")
    spans = [[(int(a), int(b), str(c)) for a, b, c in sent] for sent in ev.pop("entities")]
    run["eval"] = ev
    label2id = {t: i for i, t in enumerate(dev["labels"])}
    run["dev"] = score(dev["labels"], texts, [tags_of(t, sp, label2id) for t, sp in zip(texts, spans)], dev["gold"])
    cut = [tags_of(t, trimmed(t, sp, kiwi.of(t)), label2id) for t, sp in zip(texts, spans)]
    run["dev_kiwi_trim"] = score(dev["labels"], texts, cut, dev["gold"])
    print(f"  {tag}: F1c {run['dev']['F1c']:.2f} F1e {run['dev']['F1e']:.2f}  {run['sentences_per_s']:.1f} sent/s  "
          f"p50 {ev['serve_p50_ms']:.1f} ms  peak RSS {run['peak_rss_bytes'] / MIB:.0f} MiB", flush=True)
    return run


def trained(args, kiwi: KiwiMorphemes, phases: common.Phases) -> dict[str, Any]:
    """Both models x both taggings, fitted token then char per model, each scored on dev."""
    from ner_lit.corpus.klue import read_klue_tsv
    from ner_lit.corpus.records import KLUE_LABELS

    labels = list(KLUE_LABELS)
    label2id = {t: i for i, t in enumerate(labels)}
    data = common.data_dir(args)
    sentences = read_klue_tsv(data / "dev.tsv")
    dev = {"data": data, "labels": labels, "texts": [s.text for s in sentences],
           "gold": [np.asarray([label2id[t] for t in s.tags], dtype=np.int64) for s in sentences],
           "n_train": len(read_klue_tsv(data / "train.tsv"))}
    work = common.WORK / ("boundaries-quick" if args.quick else "boundaries")
    work.mkdir(parents=True, exist_ok=True)
    dirs = {"reference": common.reference_model(args), "me5": common.me5_dir(args, args.me5)}
    out: dict[str, Any] = {"data": rel(data), "train_sentences": dev["n_train"], "dev_sentences": len(sentences), "models": {}}
    for model in args.models:
        setting = out["models"][model] = model_setting(args, model, dirs[model])
        for tagging in TAGGINGS:
            setting["runs"][tagging] = train_and_score(args, phases, kiwi, model, tagging, setting, dirs[model], work, dev)
            gc.collect()
    return out


# ================================================================================ markdown
DESIGN_NAMES = {"token": "token (first_char)", "token+kiwi_trim": "token + Kiwi trim", "morpheme_presplit": "morpheme pre-split",
                **{f"char_{k}": f"char, {k} slot{'s' if k > 1 else ''}{' (default)' if k == DEFAULT_SLOTS else ''}" for k in SLOTS}}
TYPES = ("DT", "LC", "OG", "PS", "QT", "TI")


def f(x: Optional[float], fmt: str = ".2f") -> str:
    return "—" if x is None or (isinstance(x, float) and x != x) else format(x, fmt)


def per_type_row(what: str, design: str, s: dict[str, Any]) -> str:
    return f"| {what} | {design} | " + " | ".join(f(s["per_type_F1e"].get(t)) for t in TYPES) + f" | {f(s['F1e'])} |"


def _ceilings_md(rec: dict[str, Any]) -> list[str]:
    m, c = rec["machine"], rec["ceilings"]
    lines = [
        f"# Exact entity boundaries: the designs side by side{' (QUICK: smoke run, figures mean nothing)' if rec['quick'] else ''}",
        "",
        f"{rec['date']} · {m['cpu']} · {m['cores']} cores · ISA {', '.join(m['isa']) or 'none listed'} · torch {m['torch']} · "
        f"transformers {m['transformers']} · lightning {m['lightning']} · load average at start "
        f"{m['load_average_at_start'][0]:.2f}, at end {m['load_average_at_end'][0]:.2f}",
        "",
        f"Command: `{rec['command']}`",
        "",
        f"## Alignment ceilings: KLUE dev, {c['sentences']:,} sentences, {c['gold_entities']:,} gold entities",
        "",
        "Gold character tags -> the design's labels -> characters, scored with the official F1 (non-space characters). "
        "*Ends inside*: % of gold entities whose last character shares its token (its piece, for the pre-split) with the "
        "next character. *Past slots*: % with a boundary at a token's k-th character or later, which `char` tagging with k "
        "slots can not express. *Lost*: 100 - entity recall.",
        "",
        "| tokenizer | design | F1c | F1e | lost % | ends inside % | past slots % |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, t in c["tokenizers"].items():
        for key, d in t["designs"].items():
            lines.append(f"| {name} | {DESIGN_NAMES[key]} | {f(d['F1c'])} | {f(d['F1e'])} | {f(100 - d['entity_recall'])} "
                         f"| {f(d['ends_inside_unit_pct'])} | {f(d.get('boundary_past_slots_pct'))} |")
    lines += ["", "| tokenizer | vocabulary | tokens | characters per token (mean) | tokens > 8 characters % |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, t in c["tokenizers"].items():
        lines.append(f"| {name}: {t['tokenizer']} | {t['vocab_size']:,} | {t['tokens']:,} | {t['chars_per_token_mean']:.2f} "
                     f"| {t['tokens_longer_than_8_chars_pct']:.2f} |")
    return lines


def _trained_rows(tr: dict[str, Any]) -> list[str]:
    lines = []
    for model, mr in tr["models"].items():
        base = mr["runs"].get("token")
        for tagging, run in mr["runs"].items():
            speed = run["sentences_per_s"] / base["sentences_per_s"] if base else None
            p50 = run["eval"]["serve_p50_ms"] / base["eval"]["serve_p50_ms"] if base else None
            ck = run["eval"]["checkpoint_scores"].get("val_F1e")
            lines.append(f"| {model} | {tagging} | {f(run['dev']['F1c'])} | {f(run['dev']['F1e'])} | {f(ck)} "
                         f"| {f(run['sentences_per_s'])} | {f(speed)}x | {f(run['eval']['serve_p50_ms'], '.1f')} "
                         f"| {f(p50)}x | {run['peak_rss_bytes'] / MIB:.0f} |")
            if "dev_kiwi_trim" in run:
                k = run["dev_kiwi_trim"]
                lines.append(f"| {model} | {tagging} + Kiwi trim | {f(k['F1c'])} | {f(k['F1e'])} | | | | | | |")
    return lines


def _trained_md(tr: dict[str, Any]) -> list[str]:
    ev0 = next(iter(next(iter(tr["models"].values()))["runs"].values()))["eval"]
    lines = [
        "",
        f"## Trained models: {tr['train_sentences']:,} train -> {tr['dev_sentences']:,} dev sentences",
        "",
        "Each row one `python -m ner_lit fit` of the recipe with `--data.tagging token` or `char` (same seed, same epochs), "
        "then its best checkpoint's dev predictions (`Predictor.predict`) scored with the official F1; *ckpt F1e*: the "
        "validation F1e the checkpoint recorded (a check). Training sentences/s: train sentences x epochs / time inside the "
        "epochs (validation, checkpoints, model building excluded). Serve p50: one sentence per `predict` call, median "
        f"over the first {ev0['serve_sentences']} dev sentences after {ev0['serve_warmup']} warm-up calls, "
        f"{ev0['torch_threads']} torch thread(s). Peak RSS: the fit process's own high-water mark (GNU time), validation "
        "included. *Kiwi trim*: the run's predictions, every entity's end trimmed; its serving adds Kiwi's analysis "
        "(below) to each request.",
        "",
        "| model | design | F1c | F1e | ckpt F1e | training sent/s | vs token | serve p50 ms | vs token | peak RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *_trained_rows(tr),
        "", f"The README's sentence `{SHOWCASE}`, answered by each run's best checkpoint:", "",
        "| model | design | entities |", "| --- | --- | --- |",
    ]
    for model, mr in tr["models"].items():
        for tagging, run in mr["runs"].items():
            got = run["eval"].get("showcase")
            if got is not None:
                lines.append(f"| {model} | {tagging} | " + ", ".join(f"`{t}` {lab}" for t, lab in got) + " |")
    settings = [f"{model}: {mr['config']}, model {mr['model_dir']}, {mr['epochs']} epoch(s), seed {mr['seed']}, "
                f"precision {mr['precision']}"
                + (f", extra arguments {' '.join(mr['extra_arguments'])}" if mr["extra_arguments"] else "")
                for model, mr in tr["models"].items()]
    return lines + ["", "Settings: " + "; ".join(settings)]


def _per_type_md(rec: dict[str, Any]) -> list[str]:
    lines = ["", "## Per-type F1e", "", "| source | design | " + " | ".join(TYPES) + " | macro |",
             "| --- | --- | " + " | ".join("---:" for _ in TYPES) + " | ---: |"]
    for name, t in rec["ceilings"]["tokenizers"].items():
        for key in ("token", f"char_{DEFAULT_SLOTS}"):
            lines.append(per_type_row(f"ceiling, {name}", DESIGN_NAMES[key], t["designs"][key]))
    for model, mr in (rec.get("trained") or {}).get("models", {}).items():
        for tagging, run in mr["runs"].items():
            lines.append(per_type_row(f"trained, {model}", tagging, run["dev"]))
            if "dev_kiwi_trim" in run:
                lines.append(per_type_row(f"trained, {model}", f"{tagging} + Kiwi trim", run["dev_kiwi_trim"]))
    return lines


def _kiwi_and_machine_md(rec: dict[str, Any]) -> list[str]:
    k, m = rec["kiwi"], rec["machine"]
    return [
        "",
        "## Kiwi costs (kiwipiepy " + k["kiwipiepy"] + ", one process, this machine)",
        "",
        "| load (import + Kiwi()), s | first analysis, s | RSS increase after both, MiB | after analysing all, MiB "
        "| analysis per sentence p50 / mean / p99, ms | sentences |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {k['load_s']:.2f} | {k['first_analysis_s']:.2f} | {k['rss_increase_after_load_bytes'] / MIB:.0f} "
        f"| {k['rss_increase_after_analysis_bytes'] / MIB:.0f} "
        f"| {f(k['analysis_ms_p50'])} / {f(k['analysis_ms_mean'])} / {f(k['analysis_ms_p99'])} | {k['sentences_analysed']:,} |",
        "",
        "## Machine",
        "",
        f"{m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}), vector/matrix ISA: {', '.join(m['isa']) or 'none'}; "
        f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, lightning {m['lightning']}; "
        f"load average (1/5/15 min) at start {' / '.join(f'{x:.2f}' for x in m['load_average_at_start'])}, "
        f"at end {' / '.join(f'{x:.2f}' for x in m['load_average_at_end'])}; {rec['date']}.",
    ]


def markdown(rec: dict[str, Any]) -> str:
    tr = rec.get("trained")
    lines = _ceilings_md(rec) + (_trained_md(tr) if tr else []) + _per_type_md(rec) + _kiwi_and_machine_md(rec)
    return "\n".join(lines) + "\n"


# ================================================================================ main
def parse_args() -> argparse.Namespace:
    ap = common.parser(__doc__)
    ap.add_argument("--me5", type=Path, default=REPO / "models" / "me5",
                    help="multilingual-e5-small directory (default models/me5; built by the shared tool if missing)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs of every fit (default: each recipe's; 1 with --quick)")
    ap.add_argument("--models", default="reference,me5", help="comma-separated, of: " + ", ".join(CONFIGS))
    ap.add_argument("--serve-threads", type=int, default=1,
                    help="torch threads of the evaluating process (default 1: on a 2-core machine shared with other work, "
                         "torch's default of all cores makes one-sentence calls many times slower; 0: torch's default)")
    ap.add_argument("--ceilings-only", action="store_true", help="the alignment ceilings and Kiwi costs only, no training")
    ap.add_argument("--seed", type=int, default=None,
                    help="seed_everything of every fit (default: each recipe's); results then go to boundaries-seed<N>.json/.md")
    ap.add_argument("--_evaluate", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._evaluate:
        return args
    args.shared = Path(args.shared).resolve()
    args.me5 = args.me5.resolve()
    args.models = [m for m in args.models.split(",") if m]
    unknown = set(args.models) - set(CONFIGS)
    if unknown:
        ap.error(f"--models: unknown {sorted(unknown)}")
    if args.epochs is None and args.quick:
        args.epochs = 1
    return args


def main() -> None:
    args = parse_args()
    if args._evaluate:
        return evaluate_child(args._evaluate)
    from ner_lit.corpus.klue import read_klue_tsv

    common.quiet()
    record = common.start_record(NAME if args.seed is None else f"{NAME}-seed{args.seed}", args)
    phases = common.Phases()
    kiwi = phases.run("load Kiwi", KiwiMorphemes)
    dev = read_klue_tsv(common.klue_dir(args) / "dev.tsv")[:QUICK_CEILING_SENTENCES if args.quick else None]
    common.me5_dir(args, args.me5)
    phases.run("Kiwi analysis of the ceiling sentences", lambda: [kiwi.of(s.text) for s in dev])
    record["kiwi"] = kiwi.costs()  # before training: the per-sentence figures are those of the ceiling sentences only
    record["ceilings"] = phases.run("ceilings", lambda: ceilings(args, kiwi, dev))
    if not args.ceilings_only:
        record["trained"] = trained(args, kiwi, phases)
    record["phases"] = phases.record
    common.write_record(record, args)
    text = markdown(record)
    path = common.write_text(common.results_dir(args) / f"{record['name']}.md", text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

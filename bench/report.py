"""Collect bench/results/*.json into bench/results/RESULTS.md (Markdown tables, target and met / not met).

    python bench/report.py [--results DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

KNOWN = """Known figures measured outside the project (same setting, 3 epochs): the original system
(Fabric loop, padding to 128, specials/padding trained as O, constant LR) 60-65 train sentences/s,
dev eval ~40 s (17 s of it seqeval), F1c/F1e 66.22/38.84; HF Trainer + DataCollatorForTokenClassification
133-140 sentences/s, dev eval 11-12 s, 67.75/40.92."""


def f(x, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x != 0 and abs(x) < 1e-3:
            return f"{x:.1e}"
        return f"{x:.{nd}f}"
    return str(x)


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def machine_line(d: dict) -> str:
    m = d.get("machine", {})
    la = m.get("load_average_at_start", [None])[0]
    le = m.get("load_average_at_end", [None])[0]
    q = " **(--quick: figures mean nothing)**" if d.get("quick") else ""
    return (f"_{d.get('date', '?')}, {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch')}, "
            f"transformers {m.get('transformers')}, lightning {m.get('lightning')}; 1-min load average {f(la)} at start, "
            f"{f(le)} at end; `{d.get('command', '')}`_{q}\n")


def targets(d: dict) -> str:
    t = d.get("targets")
    if not t:
        return ""
    rows = []
    for k, v in t.items():
        if not isinstance(v, dict) or "met" not in v:
            continue
        value = v.get("value", v.get("ratio"))
        rows.append([k, str(v.get("target", "")), f(value, 3) if isinstance(value, float) else str(value),
                     "**met**" if v["met"] else "**not met**"])
    if not rows:
        return ""
    return table(["target", "wanted", "measured", "status"], rows)


def sec_train(d: dict) -> str:
    s = d["sentences_per_s"]
    pad = d.get("padded_tokens_per_sentence", {})
    rows = [[k, s[k], pad.get(k), ", ".join(f"{x['sentences_per_s']:.1f}" for x in d["rounds"][k])] for k in s]
    st = d.get("setting", {})
    return ("## 1. Training throughput\n\n" + machine_line(d) +
            f"\nTimed: {st.get('timed_steps')} steps after {st.get('warmup_steps')} warm-up steps, {st.get('rounds')} interleaved rounds; median.\n\n"
            + table(["system", "train sentences/s (median)", "padded tokens / sentence", "per round"], rows)
            + ("\nMedian of the per-round ratios (each round's three systems measured back to back): " + ", ".join(
                f"{k} {f(v)}x" for k, v in d["speedup_median_of_rounds"].items()) + "\n" if d.get("speedup_median_of_rounds") else "")
            + "\n" + targets(d))


def sec_eval(d: dict) -> str:
    s = d["seconds"]
    rows = [[k, s[k], d["f1"][k]["F1c"], d["f1"][k]["F1e"], d.get("metric_s", {}).get(k)] for k in s]
    st = d.get("setting", {})
    return ("## 2. Evaluation speed (full dev.tsv)\n\n" + machine_line(d) +
            f"\nWeights: `{st.get('weights')}` (trained: {f(st.get('trained_weights'))}); ner_lit validation loop alone "
            f"{f(d.get('ner_lit_loop_s'))} s.\n\n"
            + table(["system", "seconds (median)", "F1c", "F1e", "of which metrics (s)"], rows) + "\n" + targets(d))


def sec_metric(d: dict) -> str:
    s = d["seconds"]
    rows = [[k, s[k] * 1000, d["values"][k]["F1c"], d["values"][k]["F1e"]] for k in s]
    return ("## 3. Metric speed (5,000 dev sentences, corrupted predictions)\n\n" + machine_line(d) + "\n"
            + table(["implementation", "ms (median)", "F1c", "F1e"], rows)
            + f"\nSpeed-up (batched updates): {f(d['speedup']['batched'], 1)}x; one update: {f(d['speedup']['one_update'], 1)}x; "
              f"one thread: {f(d['speedup'].get('batched_1thread'), 1)}x; max abs difference {f(d['max_abs_difference'])}.\n\n" + targets(d))


def sec_profile(d: dict) -> str:
    rows = [[o["op"], o["self_cpu_ms"], o["self_cpu_pct"], o["calls"]] for o in d["train_top_ops"]]
    erows = [[o["op"], o["self_cpu_ms"], o["self_cpu_pct"], o["calls"]] for o in d["eval_top_ops"]]
    mm = d["matmul_gflops"]
    tw = d["train_window"]
    return ("## 4. Profile of a training step and an evaluation pass\n\n" + machine_line(d) +
            f"\nAchieved {f(d['achieved_gflops'])} GFLOP/s (forward+backward FLOPs {tw['forward_backward_flops']/1e9:.1f} G over "
            f"{tw['steps']} steps in {f(tw['seconds'])} s, mean batch {tw['mean_batch_shape'][0]} x {f(tw['mean_batch_shape'][1], 1)} tokens) "
            f"vs dense fp32 matmul {f(mm['2048x2048'])} GFLOP/s (2048x2048; FFN shape 1280x256x1024: {f(mm['ffn_shape_1280x256x1024'])}) "
            f"= **{d['fraction_of_matmul_peak']:.0%}**. Matmul ops take {d['train_matmul_share_of_self_cpu']:.0%} of the training "
            f"steps' self CPU time and {d['eval_matmul_share_of_self_cpu']:.0%} of evaluation's.\n\n"
            "Training steps, top ops by self CPU time:\n\n" + table(["op", "self CPU ms", "%", "calls"], rows) +
            "\nEvaluation pass, top ops by self CPU time:\n\n" + table(["op", "self CPU ms", "%", "calls"], erows) + "\n"
            + (f"Why: {d['why']}\n\n" if d.get("why") else "") + targets(d))


def sec_accuracy(d: dict) -> str:
    out = ["## 5. Accuracy of the reference model (ner_lit, 3 epochs)\n\n", machine_line(d), "\n"]
    main = d.get("runs", {}).get("main")
    if main:
        out.append(f"`{main['command']}` ({f(main['fit_wall_s'], 0)} s wall, machine shared)\n\n")
        out.append(table(["epoch", "dev F1c", "dev F1e", "token accuracy", "val loss"],
                         [[e["epoch"] + 1, e["F1c"], e["F1e"], e["token_acc"], e["loss"]] for e in main["per_epoch"]]))
        if main.get("test"):
            t = main["test"]
            out.append(f"\nThe per-epoch figures above are the validation during `fit`, decoded as that run's code decoded "
                       f"(argmax before commit cb6bbb7, Viterbi since). `python -m ner_lit test --ckpt_path last` "
                       f"(decoding: {t['decoding']}) on the same weights: **F1c {f(t['F1c'])}, F1e {f(t['F1e'])}**.\n")
        if main.get("per_type"):
            out.append("\nPer type (checkpoint `last`, `python -m ner_lit test`, decoding "
                       f"{main.get('test', {}).get('decoding', '?')}):\n\n")
            out.append(table(["type", "precision", "recall", "F1", "support"],
                             [[k, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support", "")]
                              for k, v in main["per_type"].items()]))
    if d.get("alignment_ceiling"):
        out.append("\nAlignment ceiling (gold -> token labels -> characters, `Aligner.decode_labels`):\n\n")
        out.append(table(["token label rule", "F1c", "F1e", "sklearn/seqeval F1c", "F1e"],
                         [[c["label_rule"], c["F1c"], c["F1e"], c["sklearn_seqeval"]["F1c"], c["sklearn_seqeval"]["F1e"]]
                          for c in d["alignment_ceiling"]]))
    abl = {k: v for k, v in d.get("runs", {}).items() if k != "main"}
    if abl or main:
        out.append("\nAblations (each a full 3-epoch run, same seed, validation during fit with argmax decoding; "
                   "`threads` = OMP_NUM_THREADS of the run, set because the machine was oversubscribed):\n\n")
        rows = [[k, len(v["per_epoch"]), v["final"]["F1c"], v["final"]["F1e"], v["final"]["token_acc"], v["fit_wall_s"],
                 v.get("threads", "default")] for k, v in d.get("runs", {}).items()]
        out.append(table(["run", "epochs", "dev F1c", "dev F1e", "token acc", "fit wall s (shared machine)", "threads"], rows))
    out.append("\n" + targets(d))
    return "".join(out)


def sec_precision(d: dict) -> str:
    out = ["## 7. bf16-mixed vs 32-true\n\n", machine_line(d), "\n"]
    c = d.get("cpu", {})
    out.append("CPU: " + ", ".join(f"{k} = {v}" for k, v in c.items()) + "\n\n")
    mm = d.get("matmul_gflops_2048", {})
    out.append("Dense 2048x2048 matmul: " + ", ".join(f"{k} {f(v)} GFLOP/s" for k, v in mm.items()) + "\n\n")
    rows = [[p, d["sentences_per_s"][p], d.get("accuracy", {}).get(p, {}).get("final", {}).get("F1c"),
             d.get("accuracy", {}).get(p, {}).get("final", {}).get("F1e"),
             len(d.get("accuracy", {}).get(p, {}).get("per_epoch", [])) or None] for p in d["sentences_per_s"]]
    out.append(table(["precision", "train sentences/s (median)", "dev F1c", "dev F1e", "epochs"], rows))
    out.append(f"\nbf16 / fp32 throughput: {f(d.get('bf16_speedup'))}x.\n")
    if d.get("note"):
        out.append(f"\n{d['note']}\n")
    return "".join(out)


def sec_budget(d: dict) -> str:
    out = ["## 6. Best dev F1e within a 10-minute training budget\n\n", machine_line(d), "\n"]
    rows = [[k, v.get("train_s"), v.get("epochs"), v.get("F1c"), v.get("F1e"),
             # a run kept from an earlier invocation (--skip-hf / --skip-ner-lit) says when and how it ran
             f"{v['measured']['date']} `{v['measured']['command']}`" if v.get("measured") else "this run"]
            for k, v in d.get("runs", {}).items()]
    out.append(table(["recipe", "training s", "epochs", "dev F1c", "dev F1e", "measured"], rows))
    return "".join(out) + "\n" + targets(d)


def sec_serve(d: dict) -> str:
    out = ["## 8. Serving\n\n", machine_line(d), "\n"]
    body = {k: v for k, v in d.items() if k not in ("machine", "name", "date", "command", "quick", "targets")}
    out.append("```json\n" + json.dumps(body, indent=1, ensure_ascii=False)[:4000] + "\n```\n\n")
    return "".join(out) + targets(d)


SECTIONS = [("train_throughput", sec_train), ("eval_speed", sec_eval), ("metric_speed", sec_metric),
            ("profile_step", sec_profile), ("accuracy", sec_accuracy), ("precision", sec_precision),
            ("budget", sec_budget), ("serve", sec_serve)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    parts = ["# ner_lit benchmark results\n\n",
             "Reference setting: this machine's CPU (2 cores), fp32 unless stated; the reference tiny model "
             "(../shared/tools/reference-model, WordPiece 8,000 + random 4x256 BERT); KLUE-NER train.tsv (5,000) -> "
             "dev.tsv (5,000); batch 32, lr 5e-4, max_length 128, seed 7. Comparisons are measured in the same run, "
             "interleaved, median of repeats; the load average printed with each section is that of a machine shared "
             "with other jobs.\n\n", KNOWN + "\n\n"]
    summary = []
    for name, fn in SECTIONS:
        p = args.results / f"{name}.json"
        if not p.is_file():
            parts.append(f"## {name}\n\nnot run yet (`python bench/{name}.py`).\n\n" if name != "serve" else
                         "## 8. Serving\n\nnot run yet (bench/results/serve.json is written by the serving benchmark).\n\n")
            continue
        d = json.loads(p.read_text())
        try:
            parts.append(fn(d) + "\n")
        except (KeyError, TypeError, IndexError) as exc:  # a partial result still shows up
            parts.append(f"## {name}\n\n(incomplete result: {type(exc).__name__} {exc})\n\n```json\n"
                         + json.dumps({k: v for k, v in d.items() if k != "machine"}, indent=1)[:3000] + "\n```\n\n")
        for k, v in (d.get("targets") or {}).items():
            if not isinstance(v, dict) or "met" not in v:
                continue
            value = v.get("value", v.get("ratio"))
            summary.append([name, k, str(v.get("target", "")), f(value, 3) if isinstance(value, float) else str(value),
                            "met" if v["met"] else "**not met**"])
    notes = args.results / "notes.md"
    if notes.is_file():  # hand-written reading of the figures
        parts.insert(3, notes.read_text(encoding="utf-8").rstrip() + "\n\n")
    if summary:
        parts.insert(3, "## Summary of targets\n\n" + table(["script", "target", "wanted", "measured", "status"], summary) + "\n")
    out = args.results / "RESULTS.md"
    out.write_text("".join(parts), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""bench/serve_bench.py's verdicts and its Markdown: the targets on all rounds and on the quiet ones.

A round is *quiet* when the processes other than the load generator and the server used less
than ``MAX_OTHER_CPU_CORES`` during it. The verdict (``targets``) is judged on the quiet rounds
where both servers of a comparison have one, else on all rounds, flagged when other load
distorted them; the all-rounds figures are kept beside it.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional

from bench.common import write_json, write_text
from bench.serve_clients import MAX_OTHER_CPU_CORES

TARGET_THROUGHPUT_RATIO = 3.0
AIM_THROUGHPUT_RATIO = 5.0
TARGET_P50_RATIO = 0.5


def suffix(setting: Optional[int]) -> str:
    """The server-name suffix of a torch-thread setting: "" for torch's default, "-t<N>" for N threads."""
    return "" if setting is None else f"-t{setting}"


def setting_name(setting: Optional[int]) -> str:
    return "default" if setting is None else str(setting)


def _suffix_of_name(name: str) -> str:
    return "" if name == "default" else f"-t{name}"


def _fmt(x: float, nd: int = 1) -> str:
    return f"{x:.{nd}f}"


# =============================================================================== verdicts
def targets(res: dict[str, Any], client_counts: tuple[int, ...], sfx: str) -> dict[str, Any]:
    """The targets on all rounds: throughput at the most clients, p50 at the fewest, the no-op ceiling."""
    hi, lo = str(max(client_counts)), str(min(client_counts))
    ner, naive = res["ner_lit" + sfx], res["naive" + sfx]
    ratio = ner[hi]["requests_per_s"] / naive[hi]["requests_per_s"]
    p50_ratio = ner[lo]["p50_ms"] / naive[lo]["p50_ms"]
    other = max(x[c]["other_cpu_cores"] for x in (ner, naive) for c in (hi, lo))
    return {
        # CPU that neither this load generator nor the server used during these measurements:
        # above MAX_OTHER_CPU_CORES something else competed and the comparison is distorted.
        "max_other_cpu_cores": other,
        "undistorted": other < MAX_OTHER_CPU_CORES,
        "throughput": {"clients": int(hi), "ner_lit_requests_per_s": ner[hi]["requests_per_s"],
                       "naive_requests_per_s": naive[hi]["requests_per_s"], "ratio": ratio,
                       "target": TARGET_THROUGHPUT_RATIO, "aim": AIM_THROUGHPUT_RATIO,
                       "met": ratio >= TARGET_THROUGHPUT_RATIO, "aim_met": ratio >= AIM_THROUGHPUT_RATIO},
        "p50": {"clients": int(lo), "ner_lit_ms": ner[lo]["p50_ms"], "naive_ms": naive[lo]["p50_ms"],
                "ratio": p50_ratio, "target": TARGET_P50_RATIO, "met": p50_ratio <= TARGET_P50_RATIO},
        "ceiling": {"noop_waitress_requests_per_s": res["noop-waitress"][hi]["requests_per_s"],
                    "ner_lit_share_of_ceiling": ner[hi]["requests_per_s"] / res["noop-waitress"][hi]["requests_per_s"],
                    "client_cpu_cores_ner_lit": ner[hi]["client_cpu_cores"],
                    "machine_cpu_cores_ner_lit": ner[hi]["machine_cpu_cores"],
                    "noop_flask_requests_per_s": res["noop-flask"][hi]["requests_per_s"]},
    }


def _quiet_figures(per_round: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """One configuration's figures over its quiet rounds (None without any)."""
    quiet = [r for r in per_round if r["other_cpu_cores"] < MAX_OTHER_CPU_CORES]
    if not quiet:
        return None
    return {
        "rounds": len(quiet),
        "requests": sum(r["requests"] for r in quiet),
        "requests_per_s": statistics.median(r["requests_per_s"] for r in quiet),
        # per-round percentiles, median over the quiet rounds
        **{k: statistics.median(r[k] for r in quiet) for k in ("p50_ms", "p95_ms", "p99_ms")},
        "client_cpu_cores": statistics.median(r["client_cpu_cores"] for r in quiet),
        "server_cpu_cores": statistics.median(r["server_cpu_cores"] for r in quiet),
        "other_cpu_cores": statistics.median(r["other_cpu_cores"] for r in quiet),
    }


def _quiet_targets(res: dict[str, Any], sfx: str) -> dict[str, Any]:
    """The targets of one torch-thread setting on the quiet rounds, where both servers have one."""
    clients = sorted(int(c) for c in res["ner_lit" + sfx])
    hi, lo = str(clients[-1]), str(clients[0])
    ner, naive = res["ner_lit" + sfx], res["naive" + sfx]
    t: dict[str, Any] = {}
    if ner[hi]["quiet"] and naive[hi]["quiet"]:
        ratio = ner[hi]["quiet"]["requests_per_s"] / naive[hi]["quiet"]["requests_per_s"]
        t["throughput"] = {"clients": int(hi), "ner_lit_requests_per_s": ner[hi]["quiet"]["requests_per_s"],
                           "naive_requests_per_s": naive[hi]["quiet"]["requests_per_s"], "ratio": ratio,
                           "rounds": [ner[hi]["quiet"]["rounds"], naive[hi]["quiet"]["rounds"]],
                           "met": ratio >= TARGET_THROUGHPUT_RATIO, "aim_met": ratio >= AIM_THROUGHPUT_RATIO}
    if ner[lo]["quiet"] and naive[lo]["quiet"]:
        ratio = ner[lo]["quiet"]["p50_ms"] / naive[lo]["quiet"]["p50_ms"]
        t["p50"] = {"clients": int(lo), "ner_lit_ms": ner[lo]["quiet"]["p50_ms"], "naive_ms": naive[lo]["quiet"]["p50_ms"],
                    "ratio": ratio, "rounds": [ner[lo]["quiet"]["rounds"], naive[lo]["quiet"]["rounds"]],
                    "met": ratio <= TARGET_P50_RATIO}
    return t


def _judge(judged: dict[str, Any], quiet: dict[str, Any]) -> None:
    """The verdict: on quiet rounds where there are any (the all-rounds figures kept beside them)."""
    for key in ("throughput", "p50"):
        judged[key].pop("all_rounds", None)
        base = {k: v for k, v in judged[key].items() if k != "judged_on"}
        if key in quiet:
            judged[key].update({k: v for k, v in quiet[key].items() if k != "rounds"}, quiet_rounds=quiet[key]["rounds"],
                               judged_on="quiet rounds", all_rounds=base)
        else:
            judged[key]["judged_on"] = "all rounds" + ("" if judged.get("undistorted") else " (distorted: other load)")


def add_quiet_view(record: dict[str, Any]) -> None:
    """Figures from the rounds during which other processes used < MAX_OTHER_CPU_CORES, and
    the targets judged on them where every configuration involved has such a round."""
    for per_clients in record["results"].values():
        for s in per_clients.values():
            s["quiet"] = _quiet_figures(s["per_round"])
    out: dict[str, Any] = {}
    for setting, judged in record["targets_by_torch_threads"].items():
        out[setting] = _quiet_targets(record["results"], _suffix_of_name(setting))
        _judge(judged, out[setting])
    record["targets_quiet_by_torch_threads"] = out
    first = next(iter(record["targets_by_torch_threads"]))
    record["targets"] = record["targets_by_torch_threads"][first]


# =============================================================================== Markdown
def _head(rec: dict[str, Any]) -> list[str]:
    m = rec["machine"]
    return [
        f"# Serving speed: ner_lit vs the original system's way{' (QUICK: smoke test, figures mean nothing)' if rec['quick'] else ''}",
        "",
        f"{rec['date']} · {m['cpu']} · {m['cores']} cores · torch {m['versions']['torch']} · "
        f"transformers {m['versions']['transformers']} · waitress {m['versions']['waitress']} · werkzeug {m['versions']['werkzeug']}",
        "",
        f"Model: {rec['model']['description']}. Load: the first {rec['load']['sentences']} sentences of dev.tsv, "
        f"POST /api (bare JSON string), {rec['load']['rounds']} interleaved round(s) per configuration, "
        f"each client sending {rec['load']['requests_per_client']} requests over a keep-alive http.client connection "
        f"(the naive server closes it after every answer), or fewer where a measurement hit its bound of "
        f"{rec['load']['max_seconds_per_measurement']:g} s (marked *). "
        "req/s: median over rounds (min-max); latencies: percentiles over all rounds' requests. "
        f"CPU columns in cores (this machine has {m['cores']}): the load generator (client), the server process, "
        "everything else on the machine. `-t1`: the server's torch limited to 1 intra-op thread (OMP_NUM_THREADS=1); "
        "without suffix: torch's default (one thread per core).",
        "",
    ]


def _results_table(rec: dict[str, Any]) -> list[str]:
    lines = ["| server | clients | req/s | (min-max) | p50 ms | p95 ms | p99 ms | client CPU | server CPU | other CPU | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in rec["systems"]:
        for c, s in rec["results"][name].items():
            lines.append(
                f"| {name} | {c} | {_fmt(s['requests_per_s'])}{'*' if s['stopped_early_by_time_bound'] else ''} "
                f"| {_fmt(s['requests_per_s_min'])}-{_fmt(s['requests_per_s_max'])} "
                f"| {_fmt(s['p50_ms'], 2)} | {_fmt(s['p95_ms'], 2)} | {_fmt(s['p99_ms'], 2)} | {_fmt(s['client_cpu_cores'], 2)} "
                f"| {_fmt(s['server_cpu_cores'], 2)} | {_fmt(s['other_cpu_cores'], 2)} | {s['errors']} |"
            )
    return lines


def _targets_table(rec: dict[str, Any]) -> list[str]:
    lines = ["", "| torch threads | target (all rounds) | measured | met |", "| --- | --- | ---: | --- |"]
    for setting, t0 in rec["targets_by_torch_threads"].items():
        t = {**t0, **{k: t0[k].get("all_rounds", t0[k]) for k in ("throughput", "p50")}}
        distorted = "" if t["undistorted"] else " (distorted: other load)"
        thr, p50 = t["throughput"], t["p50"]
        lines += [
            f"| {setting} | {thr['clients']} clients: ner_lit req/s >= {TARGET_THROUGHPUT_RATIO:g}x naive "
            f"(aim {AIM_THROUGHPUT_RATIO:g}x) | {thr['ratio']:.2f}x ({thr['ner_lit_requests_per_s']:.0f} vs "
            f"{thr['naive_requests_per_s']:.0f} req/s) | {'yes' if thr['met'] else 'NO'}"
            f"{', aim met' if thr['aim_met'] else ''}{distorted} |",
            f"| {setting} | 1 client: ner_lit p50 <= {TARGET_P50_RATIO:g}x naive p50 | {p50['ratio']:.2f}x "
            f"({p50['ner_lit_ms']:.2f} vs {p50['naive_ms']:.2f} ms) | {'yes' if p50['met'] else 'NO'}{distorted} |",
        ]
    return lines


def _footer(rec: dict[str, Any]) -> list[str]:
    m, t, ob, ol = rec["machine"], rec["targets"], rec["other_benchmarks"], rec["other_load"]
    busy = ob["at_start"] or ob["at_end"] or ol["at_start"] or ol["at_end"]
    return [
        "",
        f"The verdict (JSON `targets`) is for torch threads {next(iter(rec['targets_by_torch_threads']))}, judged on the "
        "quiet rounds below where both servers have one, else on all rounds. "
        f"Load generator ceiling: the no-op waitress server takes {_fmt(t['ceiling']['noop_waitress_requests_per_s'])} req/s "
        f"with {t['throughput']['clients']} clients (no-op Flask development server: "
        f"{_fmt(t['ceiling']['noop_flask_requests_per_s'])}); "
        f"ner_lit reaches {t['ceiling']['ner_lit_share_of_ceiling'] * 100:.0f}% of it. During ner_lit's "
        f"{t['throughput']['clients']}-client measurement the client used {t['ceiling']['client_cpu_cores_ner_lit']:.2f} "
        f"and the whole machine {t['ceiling']['machine_cpu_cores_ner_lit']:.2f} of {m['cores']} cores.",
        "",
        f"Other benchmark processes (bench/*.py): {len(ob['at_start'])} at start, {len(ob['at_end'])} at end; other training/"
        f"test processes: {len(ol['at_start'])} at start, {len(ol['at_end'])} at end"
        + (" -- the figures are distorted by that concurrent load (see the other CPU column)." if busy
           else " (a quiet machine).")
        + " Sanity (each sentence once to both servers, within 15 s each; ner_lit decodes BIO-valid paths with "
        "Viterbi, naive takes each token's argmax, so labels differ where the argmax path is invalid): "
        + "; ".join(f"torch threads {k}: {v['token_label_agreement'] * 100:.2f}% of token labels agree, "
                    f"{v['sentences_same_tokens']}/{v['sentences']} sentences tokenized alike" for k, v in rec["sanity"].items())
        + ".",
        "",
        f"Command: `{rec['command']}`",
    ]


def quiet_markdown(rec: dict[str, Any]) -> list[str]:
    lines = ["", f"## Quiet rounds only (other processes < {MAX_OTHER_CPU_CORES:g} cores during the measurement)", "",
             "| server | clients | quiet rounds | req/s | p50 ms | p95 ms | p99 ms | client CPU | server CPU |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in rec["systems"]:
        for c, s in rec["results"][name].items():
            q = s.get("quiet")
            if q is None:
                lines.append(f"| {name} | {c} | 0 | - | - | - | - | - | - |")
            else:
                lines.append(f"| {name} | {c} | {q['rounds']} | {_fmt(q['requests_per_s'])} | {_fmt(q['p50_ms'], 2)} "
                             f"| {_fmt(q['p95_ms'], 2)} | {_fmt(q['p99_ms'], 2)} | {_fmt(q['client_cpu_cores'], 2)} "
                             f"| {_fmt(q['server_cpu_cores'], 2)} |")
    lines += ["", "| torch threads | target (quiet rounds) | measured | met |", "| --- | --- | ---: | --- |"]
    for setting, t in rec["targets_quiet_by_torch_threads"].items():
        if "throughput" in t:
            x = t["throughput"]
            lines.append(f"| {setting} | {x['clients']} clients: req/s >= {TARGET_THROUGHPUT_RATIO:g}x naive (aim "
                         f"{AIM_THROUGHPUT_RATIO:g}x) | {x['ratio']:.2f}x ({x['ner_lit_requests_per_s']:.0f} vs "
                         f"{x['naive_requests_per_s']:.0f} req/s) | {'yes' if x['met'] else 'NO'}{', aim met' if x['aim_met'] else ''} |")
        else:
            lines.append(f"| {setting} | throughput | no quiet round of both | - |")
        if "p50" in t:
            x = t["p50"]
            lines.append(f"| {setting} | {x['clients']} client: p50 <= {TARGET_P50_RATIO:g}x naive | {x['ratio']:.2f}x "
                         f"({x['ner_lit_ms']:.2f} vs {x['naive_ms']:.2f} ms) | {'yes' if x['met'] else 'NO'} |")
        else:
            lines.append(f"| {setting} | p50 | no quiet round of both | - |")
    return lines


def markdown(rec: dict[str, Any]) -> str:
    lines = _head(rec) + _results_table(rec) + _targets_table(rec) + _footer(rec)
    if "targets_quiet_by_torch_threads" in rec:
        lines += quiet_markdown(rec)
    return "\n".join(lines) + "\n"


def recompute(path: Path) -> None:
    """Re-derive the quiet view and the Markdown of an existing serve.json (in place)."""
    record = json.loads(path.read_text(encoding="utf-8"))
    add_quiet_view(record)
    write_json(path, record)
    write_text(path.with_suffix(".md"), markdown(record))
    print(markdown(record))

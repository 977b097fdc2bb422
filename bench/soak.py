"""Server stability under a steady mixed load: ``python -m ner_lit serve`` answering 8 clients for 3 minutes,
one request in ten a bad one.

What is measured, and why: a server that survives each malformed request alone (bench/fuzz.py) can
still leak memory, drift into wrong answers under micro-batching, or drop connections when bad and
good requests interleave for minutes. One real server,

    python -m ner_lit serve --ckpt_path CKPT --host 127.0.0.1 --port 0 --api_key <random token>

answers ``--clients`` threads (8) for ``--seconds`` (180; ``--quick``: 8). Each request is bad with
probability ``--bad-fraction`` (0.1), drawn from four fuzz classes of bench/serve_fuzz_cases.py (bad
JSON: 400, oversized text: 413, wrong token: 401, bad method: 405; each on a fresh raw connection,
its status checked); the rest are valid, ``POST /api`` (80%) or ``POST /api/batch`` (20%, 2-8 texts),
over each client's keep-alive connection, with the token. A valid answer is compared with the
answer to the same request sent alone before the load started: the same labels, spans, tokens and
texts, and numbers within 1e-4 (micro-batching may move a probability in its 6th decimal,
docs/serving.md); anything else is a wrong answer. A 503 to ``/api/batch`` (more batch requests at
once than the server takes, with ``Retry-After``) is the server's deliberate answer: counted, no error.

Recorded: requests/s, valid and bad request counts (per kind and family), unexpected statuses,
connection errors, wrong answers (and the largest number difference among the right ones),
p50/p99 latency of valid requests, the server's resident memory at start, middle and end (sampled
every second), the CPU used by server and clients, the machine (CPU flags) and its load.
Exit status 1 on any error (unexpected status, connection error, a dead server) or wrong answer.

    python bench/soak.py [--ckpt_path FILE.ckpt] [--seconds 180] [--clients 8]
    python bench/soak.py --quick   # 8 seconds; results in bench/work/quick-results

Without ``--ckpt_path`` the best checkpoint of bench/work/soak-run is served, trained there first
(the tiny recipe on the sample corpus, 1 epoch) when it holds none. The server's log is in
bench/work/soak/ (``--quick``: bench/work/soak-quick/). Results: bench/results/soak.json.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import resource
import secrets
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402
from bench import serve_fuzz_cases as cases  # noqa: E402
from bench.serve_clients import percentiles  # noqa: E402
from bench.serve_fuzz_cases import Case, Target  # noqa: E402

#: A valid answer's numbers may differ from the one taken alone by this much (6th-decimal batching noise).
TOLERANCE = 1e-4
EXAMPLES = 5


class Valid:
    """The valid requests and their answers taken alone, one at a time, before the load."""

    def __init__(self, port: int, token: str, texts: list[str], rng: random.Random) -> None:
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.requests: list[tuple[str, bytes, str]] = []  # (path, body, what)
        for i, text in enumerate(texts):
            self.requests.append(("/api", cases.jbody({"text": text}), f"text {i}"))
        self.n_api = len(self.requests)
        for g in range(max(4, len(texts) // 4)):
            picked = rng.sample(range(len(texts)), rng.randint(2, 8))
            self.requests.append(("/api/batch", cases.jbody({"texts": [texts[i] for i in picked]}), f"batch {g} {picked}"))
        conn = http.client.HTTPConnection(cases.HOST, port, timeout=60)
        self.answers: list[tuple[bytes, Any]] = []
        for path, body, what in self.requests:
            conn.request("POST", path, body=body, headers=self.headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise SystemExit(f"{what} answered {resp.status} alone: {data[:300]!r}")
            self.answers.append((data, json.loads(data)))
        conn.close()


class ClientStats:
    def __init__(self) -> None:
        self.valid: Counter[str] = Counter()
        self.bad: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.unexpected: list[dict[str, Any]] = []
        self.connection_errors: Counter[str] = Counter()
        self.wrong: list[dict[str, Any]] = []
        self.byte_identical = 0
        self.overload_503 = 0
        self.max_difference = 0.0
        self.latencies: dict[str, list[float]] = {"/api": [], "/api/batch": []}


def client(idx: int, port: int, valid: Valid, families: dict[str, list[Case]], args, barrier: threading.Barrier,
           out: ClientStats) -> None:
    rng = random.Random(f"{args.seed}-client-{idx}")
    conn = http.client.HTTPConnection(cases.HOST, port, timeout=60)
    names = sorted(families)
    barrier.wait()
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        if rng.random() < args.bad_fraction:
            family = rng.choice(names)
            case = rng.choice(families[family])
            answer = cases.exchange(port, case)
            out.bad[family] += 1
            if answer.status is None:
                out.connection_errors[f"bad request: {answer.error or 'closed without an answer'}"] += 1
            else:
                out.statuses[str(answer.status)] += 1
                if answer.status not in case.expect:
                    out.unexpected.append({"family": family, "kind": case.kind, "status": answer.status,
                                           "expected": case.expect, "request": cases.shown_bytes(case.data),
                                           "answer": cases.shown_bytes(answer.body)})
            continue
        if rng.random() < args.batch_fraction:
            k = rng.randrange(valid.n_api, len(valid.requests))
        else:
            k = rng.randrange(valid.n_api)
        path, body, what = valid.requests[k]
        out.valid[path] += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=valid.headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            out.connection_errors[f"valid request: {type(exc).__name__}"] += 1
            continue
        dt = time.perf_counter() - t0
        out.statuses[str(resp.status)] += 1
        if resp.status == 503 and path == "/api/batch" and resp.getheader("Retry-After"):
            out.overload_503 += 1
            continue
        if resp.status != 200:
            out.unexpected.append({"family": "valid", "kind": what, "status": resp.status, "expected": (200,),
                                   "answer": cases.shown_bytes(data)})
            continue
        out.latencies[path].append(dt)
        want_bytes, want = valid.answers[k]
        if data == want_bytes:
            out.byte_identical += 1
            continue
        try:
            diff = cases.float_difference(json.loads(data), want)
        except ValueError:
            diff = None
        if diff is None or diff > TOLERANCE:
            out.wrong.append({"request": what, "largest_number_difference": diff, "answer": cases.shown_bytes(data, 400),
                              "expected": cases.shown_bytes(want_bytes, 400)})
        else:
            out.max_difference = max(out.max_difference, diff)
    conn.close()


class RssSampler:
    """The server's VmRSS every ``every_s`` seconds, in a thread."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = common.rss_bytes("VmRSS", self.pid)
            if rss:
                self.samples.append((time.perf_counter() - self._t0, rss))
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> int:
        return min(self.samples, key=lambda s: abs(s[0] - t))[1] if self.samples else 0

    def series(self, points: int = 40) -> list[list[float]]:
        step = max(1, len(self.samples) // points)
        return [[round(t, 1), rss] for t, rss in self.samples[::step]]


def main() -> int:
    ap = common.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt_path", type=Path, default=None,
                    help="the ner_lit checkpoint to serve (default: the best of bench/work/soak-run, trained if absent)")
    ap.add_argument("--seconds", type=float, default=None, help="how long the clients send (default 180; --quick 8)")
    ap.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    ap.add_argument("--bad-fraction", type=float, default=0.1, help="share of bad requests (default 0.1)")
    ap.add_argument("--batch-fraction", type=float, default=0.2, help="share of /api/batch among the valid (default 0.2)")
    ap.add_argument("--seed", type=int, default=common.SEED)
    ap.add_argument("--work", type=Path, default=None, help="folder of the server log (default bench/work/soak[-quick])")
    args = ap.parse_args()
    if args.seconds is None:
        args.seconds = 8.0 if args.quick else 180.0
    record = common.start_record("soak", args, common.serving_machine(cases.PACKAGES))
    ckpt = cases.ensure_checkpoint(args.ckpt_path, "soak")
    work = args.work or common.WORK / ("soak-quick" if args.quick else "soak")
    token = secrets.token_urlsafe(24)
    t_run = time.perf_counter()
    server, startup_s = cases.start_server("soak", ckpt, token, work)
    try:
        port = server.port
        assert port is not None
        status, health = cases.get_json(port, "/health")
        if status != 200:
            raise SystemExit(f"GET /health answered {status}")
        target = Target(token, health["max_text_length"], health["max_batch_size"])
        texts = cases.sample_texts(48) + [cases.KNOWN_TEXT]
        valid = Valid(port, token, texts, random.Random(f"{args.seed}-batches"))
        families = cases.bad_request_families(target, args.seed)
        sampler = RssSampler(server.proc.pid, 1.0 if args.seconds >= 30 else 0.5)
        rss_start = common.rss_bytes("VmRSS", server.proc.pid)
        stats = [ClientStats() for _ in range(args.clients)]
        barrier = threading.Barrier(args.clients + 1)
        threads = [threading.Thread(target=client, args=(i, port, valid, families, args, barrier, s), daemon=True)
                   for i, s in enumerate(stats)]
        for t in threads:
            t.start()
        ru0, srv0 = resource.getrusage(resource.RUSAGE_SELF), server.cpu_s()
        sampler.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ru1, srv1 = resource.getrusage(resource.RUSAGE_SELF), server.cpu_s()
        sampler.stop()
        alive = server.proc.poll() is None
        rss_end = common.rss_bytes("VmRSS", server.proc.pid) if alive else 0
        hwm = common.rss_bytes("VmHWM", server.proc.pid) if alive else 0
        health_status, _ = cases.get_json(port, "/health") if alive else (None, None)
        known_after = cases.probe(port, token) if alive else (None, b"", "dead")
    finally:
        server.stop()
    log = cases.log_facts(server)

    valid_n = Counter[str]()
    bad_n = Counter[str]()
    statuses = Counter[str]()
    errors_by = Counter[str]()
    for s in stats:
        valid_n.update(s.valid)
        bad_n.update(s.bad)
        statuses.update(s.statuses)
        errors_by.update(s.connection_errors)
    unexpected = [u for s in stats for u in s.unexpected]
    wrong = [w for s in stats for w in s.wrong]
    lat_all = [x for s in stats for lat in s.latencies.values() for x in lat]
    requests = sum(valid_n.values()) + sum(bad_n.values())
    conn_errors = sum(errors_by.values())
    known_same = cases.compare(known_after[1], valid.answers[valid.n_api - 1][0]) if known_after[0] == 200 else "no answer"
    errors = len(unexpected) + conn_errors + (0 if alive and health_status == 200 else 1)
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    record.update({
        "settings": {"seconds": args.seconds, "clients": args.clients, "bad_fraction": args.bad_fraction,
                     "batch_fraction": args.batch_fraction, "seed": args.seed, "valid_texts": len(texts),
                     "valid_batches": len(valid.requests) - valid.n_api, "tolerance": TOLERANCE,
                     "bad_families": {k: len(v) for k, v in families.items()}},
        "server": {"command": cases.server_command(ckpt), "checkpoint": common.rel(ckpt),
                   "startup_s": round(startup_s, 2), "banner": server.banner, "health": health},
        "wall_s": round(wall, 2),
        "requests": requests,
        "requests_per_s": requests / wall,
        "valid_requests": sum(valid_n.values()),
        "valid_by_path": dict(valid_n),
        "bad_requests": sum(bad_n.values()),
        "bad_by_family": dict(bad_n),
        "statuses": dict(sorted(statuses.items())),
        "overload_503": sum(s.overload_503 for s in stats),
        "unexpected_statuses": len(unexpected),
        "unexpected_examples": unexpected[:EXAMPLES],
        "connection_errors": conn_errors,
        "connection_errors_by_kind": dict(errors_by),
        "errors": errors,
        "wrong_answers": len(wrong),
        "wrong_examples": wrong[:EXAMPLES],
        "byte_identical_answers": sum(s.byte_identical for s in stats),
        "largest_number_difference_of_right_answers": max(s.max_difference for s in stats),
        "valid_latency_ms": {k: round(v, 2) for k, v in percentiles(lat_all).items()},
        "valid_latency_ms_by_path": {p: {k: round(v, 2) for k, v in percentiles([x for s in stats for x in s.latencies[p]])
                                         .items()} for p in ("/api", "/api/batch")},
        "server_rss_bytes": {"start": rss_start, "middle": sampler.at(wall / 2), "end": rss_end,
                             "max_sampled": max((r for _, r in sampler.samples), default=0), "peak_VmHWM": hwm,
                             "series_s_bytes": sampler.series()},
        "cpu_cores": {"server": (srv1 - srv0) / wall, "clients": client_cpu / wall, "machine": os.cpu_count()},
        "server_alive_at_end": alive,
        "health_at_end": health_status,
        "known_answer_after": known_same,
        "log": log,
    })
    record["ok"] = bool(errors == 0 and not wrong and requests > 0 and record["valid_requests"] and record["bad_requests"])
    record["total_wall_s"] = round(time.perf_counter() - t_run, 2)
    record = json.loads(json.dumps(record).replace(token, "<token>"))  # the examples' requests carry it
    common.write_record(record, args)
    mib = 1 << 20
    rss = record["server_rss_bytes"]
    lat = record["valid_latency_ms"]
    print(f"{requests} requests in {wall:.1f} s ({record['requests_per_s']:.1f} req/s; valid {record['valid_requests']}, "
          f"bad {record['bad_requests']}): unexpected statuses {len(unexpected)}, connection errors {conn_errors}, wrong "
          f"answers {len(wrong)}, 503 {record['overload_503']}; valid p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms; "
          f"server RSS {rss['start'] / mib:.0f} / {rss['middle'] / mib:.0f} / {rss['end'] / mib:.0f} MiB; alive {alive}, "
          f"traceback in its log: {log['traceback']}")
    if not record["ok"]:
        for ex in (unexpected + wrong)[:EXAMPLES]:
            print(f"FAILED: {json.dumps(ex, ensure_ascii=False)[:600]}")
        print("FAILED: errors, wrong answers, a dead server or no requests")
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Server robustness: ``python -m ner_lit serve`` against 10,000 malformed and hostile requests.

What is measured, and why: docs/serving.md promises that bad input is a JSON error and never a 500,
that waitress's own refusals are the API's JSON too, that slow and flooding clients can not starve
the others, and that a token-protected API answers 401. This sends requests of 11 classes
(bench/serve_fuzz_cases.py: JSON bodies, encodings, headers, sizes, methods and paths, /api/batch
shapes, raw protocol garbage, slow clients, connection floods, authorization, valid but unusual
Unicode) over raw sockets to one real server,

    python -m ner_lit serve --ckpt_path CKPT --host 127.0.0.1 --port 0 --api_key <random token>

and records, per class: requests sent, statuses, connection errors, connections closed without an
answer, *application 5xx* (any 5xx but the deliberate 503 and the 501 to an unsupported
Transfer-Encoding), answers that are not JSON where the API answers JSON, and expectation failures
(a status the docs rule out for that request: 401 for a bad token, 200 for a valid text, a valid
request left unanswered while slow clients hold connections ...). After each class the known request
(``{"text": "김철수는 3월 5일 서울에서 삼성전자를 방문했다."}``) is sent again and its answer compared
with the one taken before the first class (byte-identical, else JSON-equal; up to 3 tries, each
recorded, as a request batched with a straggler of the class may move a probability in its 6th
decimal). At the end: whether the server is alive and answers /health, its resident memory at start
and end, and whether its stderr log holds a traceback.

Exit status 1 when a class had an application 5xx or an expectation failure, the known answer
changed, or the server died; non-JSON answers and tracebacks are reported, not fatal.

    python bench/fuzz.py [--ckpt_path FILE.ckpt] [--seed 7]
    python bench/fuzz.py --quick   # about 1,100 requests; results in bench/work/quick-results

Without ``--ckpt_path`` the best checkpoint of bench/work/fuzz-run is served, trained there first
(the tiny recipe on the sample corpus, 1 epoch) when it holds none. The server's log is in
bench/work/fuzz/ (``--quick``: bench/work/fuzz-quick/). Results: bench/results/fuzz.json.
"""
from __future__ import annotations

import json
import secrets
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import common  # noqa: E402
from bench import serve_fuzz_cases as cases  # noqa: E402
from bench.serve_clients import percentiles  # noqa: E402
from bench.serve_fuzz_cases import Answer, Case, Tally, Target  # noqa: E402

#: Concurrent senders of the one-request-per-connection classes (the server has 8 request threads).
SENDERS = 4


# =============================================================================== the runners
def run_each(port: int, group: list[Case]) -> tuple[Tally, dict[str, Any]]:
    """One request per fresh connection, :data:`SENDERS` at a time."""
    tally = Tally()
    with ThreadPoolExecutor(SENDERS) as pool:
        for case, answer in zip(group, pool.map(lambda c: cases.exchange(port, c), group)):
            tally.add(case, answer)
    return tally, {}


def known_case(token: str) -> Case:
    body, hdrs = cases.known_request(token)
    return Case("valid request meanwhile", cases.request("POST", "/api", body, auth=hdrs["Authorization"]),
                expect=(200,), must_answer=True, texts=(cases.KNOWN_TEXT,))


def _valid_meanwhile(port: int, token: str, baseline: bytes, tally: Tally, until: float) -> dict[str, Any]:
    """The known request, one at a time until ``until``: each must be 200 with the baseline's answer."""
    case = known_case(token)
    latencies, how = [], {"byte-identical": 0, "JSON-equal": 0, "within 1e-4": 0, "different": 0}
    want = json.loads(baseline)
    while True:
        answer = cases.exchange(port, case)
        tally.add(case, answer)
        if answer.status == 200:
            latencies.append(answer.latency_s)
            same = cases.compare(answer.body, baseline)
            if same == "different":  # batched with a held connection's request: a probability may move
                try:
                    same = "within 1e-4" if cases.same_prediction(json.loads(answer.body), want) else same
                except ValueError:
                    pass
            how[same] += 1
            if same == "different":
                tally.fail(case, "the known answer differs from the baseline", answer)
        if time.perf_counter() >= until:
            break
        time.sleep(0.05)
    return {"valid_requests_answered_200": len(latencies), "valid_answers": how,
            "valid_latency_ms": {k: round(v, 2) for k, v in percentiles(latencies).items()}}


def run_slow(port: int, group: list[Case], token: str, baseline: bytes, hold_s: float) -> tuple[Tally, dict[str, Any]]:
    """Hold every connection of ``group`` open (trickling a byte every 0.25 s, or stalled) for
    ``hold_s`` seconds while the known request is sent again and again; then close them, every third
    with a reset."""
    tally = Tally()
    held: list[list[Any]] = []  # [socket, case, bytes of the tail sent, or None once the server closed it]
    for case in group:
        try:
            sock = cases.connect(port)
        except OSError as exc:
            tally.add_unread(case, f"connect: {type(exc).__name__}")
            continue
        try:
            if case.data:
                sock.sendall(case.data)
        except OSError as exc:
            sock.close()
            tally.add_unread(case, f"send: {type(exc).__name__}")
            continue
        held.append([sock, case, 0])
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            for h in held:
                sock, case, pos = h
                if case.mode != "trickle" or pos is None:
                    continue
                try:
                    sock.send(case.tail[pos % len(case.tail): pos % len(case.tail) + 1])
                    h[2] = pos + 1
                except OSError:
                    h[2] = None
            stop.wait(0.25)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    t0 = time.perf_counter()
    extra = _valid_meanwhile(port, token, baseline, tally, t0 + hold_s)
    stop.set()
    trickler.join()
    closed_by_server = sum(1 for h in held if h[2] is None)
    for i, (sock, case, _) in enumerate(held):
        cases.reset(sock) if i % 3 == 0 else sock.close()
        tally.add_unread(case)
    extra.update(held_connections=len(held), held_s=round(time.perf_counter() - t0, 2),
                 closed_by_server_while_trickling=closed_by_server)
    return tally, extra


def run_flood(port: int, group: list[Case], wave: int) -> tuple[Tally, dict[str, Any]]:
    """Waves of ``wave`` connections: all opened at once, then each acts as its mode says (nothing,
    a partial request, a whole one; half-closed), the whole requests of ``send-read`` read, and all
    closed at once (FIN, or a reset for ``rst``)."""
    tally = Tally()
    waves = []
    for start in range(0, len(group), wave):
        t0 = time.perf_counter()
        opened: list[tuple[socket.socket, Case]] = []
        for case in group[start: start + wave]:
            try:
                opened.append((cases.connect(port), case))
            except OSError as exc:
                tally.add_unread(case, f"connect: {type(exc).__name__}")
        t_open = time.perf_counter() - t0
        errors: dict[int, str] = {}
        for i, (sock, case) in enumerate(opened):
            try:
                if case.data and case.mode != "open-close":
                    sock.sendall(case.data)
                if case.mode == "half-close":
                    sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors[i] = type(exc).__name__
        answers: dict[int, Answer] = {}
        for i, (sock, case) in enumerate(opened):
            if case.mode == "send-read" and i not in errors:
                try:
                    answers[i] = cases.read_answer(sock, case.method)
                except socket.timeout:
                    answers[i] = Answer(error="timeout")
                except OSError as exc:
                    answers[i] = Answer(error=type(exc).__name__)
        for sock, case in opened:
            cases.reset(sock) if case.mode == "rst" else sock.close()
        for i, (_, case) in enumerate(opened):
            if i in answers:
                tally.add(case, answers[i])
            elif case.mode == "send-read":
                tally.add(case, Answer(error=errors.get(i, "no answer")))
            else:
                tally.add_unread(case, errors.get(i))
        waves.append({"connections": len(opened), "open_s": round(t_open, 3), "wall_s": round(time.perf_counter() - t0, 3)})
        time.sleep(0.3)
    return tally, {"waves": waves}


# =============================================================================== the run
def check_known(port: int, token: str, baseline: bytes) -> dict[str, Any]:
    """The known request again: its answer against the baseline, up to 3 tries a second apart."""
    tries = []
    for _ in range(3):
        status, body, error = cases.probe(port, token)
        how = cases.compare(body, baseline) if status == 200 else (f"status {status}" if status else f"error {error}")
        tries.append(how)
        if how in ("byte-identical", "JSON-equal"):
            break
        time.sleep(1.0)
    return {"unchanged": tries[-1] in ("byte-identical", "JSON-equal"), "first_try": tries[0], "tries": tries}


def run_class(name: str, port: int, target: Target, group: list[Case], baseline: bytes, quick: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    if name == "slow_clients":
        tally, extra = run_slow(port, group, target.token, baseline, 2.0 if quick else 8.0)
    elif name == "connection_floods":
        tally, extra = run_flood(port, group, 300 if quick else 500)
    else:
        tally, extra = run_each(port, group)
    wall = time.perf_counter() - t0
    return {**tally.record(), **extra, "wall_s": round(wall, 2)}


def main() -> int:
    ap = common.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt_path", type=Path, default=None,
                    help="the ner_lit checkpoint to serve (default: the best of bench/work/fuzz-run, trained if absent)")
    ap.add_argument("--seed", type=int, default=common.SEED, help="seed of the random variants")
    ap.add_argument("--work", type=Path, default=None, help="folder of the server log (default bench/work/fuzz[-quick])")
    args = ap.parse_args()
    record = common.start_record("fuzz", args, common.serving_machine(cases.PACKAGES))
    ckpt = cases.ensure_checkpoint(args.ckpt_path, "fuzz")
    work = args.work or common.WORK / ("fuzz-quick" if args.quick else "fuzz")
    token = secrets.token_urlsafe(24)
    t_run = time.perf_counter()
    server, startup_s = cases.start_server("fuzz", ckpt, token, work)
    failures: list[str] = []
    try:
        port = server.port
        assert port is not None
        status, health = cases.get_json(port, "/health")
        if status != 200:
            raise SystemExit(f"GET /health answered {status}")
        target = Target(token, health["max_text_length"], health["max_batch_size"])
        base_status, baseline, error = cases.probe(port, token)
        if base_status != 200:
            raise SystemExit(f"the known request answered {base_status} ({error}): {baseline[:300]!r}")
        rss_start = common.rss_bytes("VmRSS", server.proc.pid)
        record["server"] = {"command": cases.server_command(ckpt), "checkpoint": common.rel(ckpt),
                            "startup_s": round(startup_s, 2), "banner": server.banner, "health": health,
                            "body_limit_bytes": target.body_limit}
        record["known_request"] = {"text": cases.KNOWN_TEXT, "status": base_status, "answer_bytes": len(baseline),
                                   "answer": baseline.decode("utf-8", "replace")}
        classes: dict[str, Any] = {}
        for name in cases.CLASSES:
            group = cases.build(name, target, args.quick, args.seed)
            rec = run_class(name, port, target, group, baseline, args.quick)
            rec["known_answer"] = check_known(port, token, baseline)
            rec["server_alive"] = server.proc.poll() is None
            classes[name] = rec
            print(f"{name:18s} {rec['requests']:5d} requests in {rec['wall_s']:5.1f} s  statuses {rec['statuses']}  "
                  f"conn errors {sum(rec['connection_errors'].values())}  closed {rec['closed_without_answer']}  "
                  f"app 5xx {rec['application_5xx']}  non-JSON {rec['non_json_answers']}  "
                  f"unexpected {rec['expectation_failures']}  known answer {rec['known_answer']['first_try']}",
                  flush=True)
            if not rec["server_alive"]:
                failures.append(f"the server died during {name}")
                break
        alive = server.proc.poll() is None
        health_status, _ = cases.get_json(port, "/health") if alive else (None, None)
        rss_end = common.rss_bytes("VmRSS", server.proc.pid) if alive else 0
    finally:
        server.stop()
    log = cases.log_facts(server)
    totals = {key: sum(c[key] for c in classes.values())
              for key in ("requests", "application_5xx", "non_json_answers", "expectation_failures",
                          "closed_without_answer", "not_http_answers")}
    totals["connection_errors"] = sum(sum(c["connection_errors"].values()) for c in classes.values())
    totals["classes"] = len(classes)
    for name, c in classes.items():
        if c["application_5xx"]:
            failures.append(f"{name}: {c['application_5xx']} application 5xx")
        if c["expectation_failures"]:
            failures.append(f"{name}: {c['expectation_failures']} expectation failures")
        if not c["known_answer"]["unchanged"]:
            failures.append(f"{name}: the known answer changed ({c['known_answer']['tries']})")
    if not alive or health_status != 200:
        failures.append(f"the server is {'alive' if alive else 'dead'} at the end, /health answered {health_status}")
    record.update({
        "seed": args.seed,
        "classes": classes,
        "totals": totals,
        "server_alive_at_end": alive,
        "health_at_end": health_status,
        "server_rss_bytes": {"start": rss_start, "end": rss_end},
        "server_exit_code": server.proc.returncode,
        "log": log,
        "failures": failures,
        "ok": not failures,
        "wall_s": round(time.perf_counter() - t_run, 2),
    })
    record = json.loads(json.dumps(record).replace(token, "<token>"))  # the examples' requests carry it
    common.write_record(record, args)
    mib = 1 << 20
    print(f"{totals['requests']} requests in {len(classes)} classes, {record['wall_s']:.0f} s: application 5xx "
          f"{totals['application_5xx']}, expectation failures {totals['expectation_failures']}, non-JSON answers "
          f"{totals['non_json_answers']}, connection errors {totals['connection_errors']}; server alive {alive}, RSS "
          f"{rss_start / mib:.0f} -> {rss_end / mib:.0f} MiB, traceback in its log: {log['traceback']}")
    for line in failures:
        print(f"FAILED: {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

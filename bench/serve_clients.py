"""The serving benches' machinery: server child processes, the client load and what the machine did meanwhile.

bench/serve_bench.py and bench/pretrained.py measure servers the same way:

* :class:`Server` runs a server in a child process on 127.0.0.1 and reads its port from the
  ``Serving on http://HOST:PORT`` line (what ``python -m ner_lit serve`` and :func:`serve_app` print);
* :func:`measure` sends the load: client threads of this process, each over one keep-alive
  ``http.client`` connection (re-opened whenever the server closes it), all released together by
  a barrier; latency per request at the client (send to last byte read), requests/s over the wall
  time from the barrier to the last client finishing, and the CPU used meanwhile by this process
  (the load generator), by the server and by the whole machine, so that a load generator or another
  process eating the cores shows in the figures;
* :func:`summarize` pools a configuration's rounds;
* :func:`other_benchmarks`, :func:`wait_for_quiet` and :func:`quiet_gate` look for other load
  before and between measurements.

Standard library only at the top: this process is the load generator, and a torch import here
would be CPU and memory taken from the servers it measures.
"""
from __future__ import annotations

import datetime as _dt
import http.client
import json
import os
import re
import resource
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from bench.common import REPO

HEADERS = {"Content-Type": "application/json"}
#: Above this many cores used by other processes during a measurement, its figures are flagged distorted.
MAX_OTHER_CPU_CORES = 0.2
OTHER_BENCH = re.compile(r"bench/[\w./-]*\.py")  # what `pgrep -f "bench/.*\.py"` shows
OTHER_LOAD = re.compile(r"-m ner_lit (fit|validate|test|predict)|pytest")


# =============================================================================== servers
def serve_app(app, server: str) -> None:
    """Serve a Flask ``app`` on 127.0.0.1, a port the OS picks, announced by a "Serving on" line:
    ``server`` "flask" is the development server one request at a time, "waitress" 8 threads."""
    if server == "flask":  # what app.run(threaded=False) runs, on a port the OS picks
        from werkzeug.serving import make_server

        srv = make_server("127.0.0.1", 0, app, threaded=False)
        print(f"Serving on http://127.0.0.1:{srv.port}", flush=True)
        srv.serve_forever()
    else:
        import waitress.server

        srv = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=8)
        print(f"Serving on http://127.0.0.1:{srv.effective_port}", flush=True)
        srv.run()


def text_of(body: Any) -> str:
    """The text of a ``POST /api`` body: a bare JSON string, as the original clients sent, or ``{"text": ...}``."""
    return body["text"] if isinstance(body, dict) else body


class Server:
    """A server child process on 127.0.0.1; ``port`` read from its "Serving on" line, the lines
    it printed before that in ``banner``, its stderr in ``log_dir/server-<name>.log``."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, torch_threads: Optional[int] = None,
                 startup_timeout_s: float = 180.0, env: Optional[dict[str, str]] = None, cwd: Path = REPO) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"server-{name}.log"
        env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        if torch_threads is not None:  # torch takes its intra-op thread count from OMP_NUM_THREADS at start
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(torch_threads)
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=str(cwd))
        self.port: Optional[int] = None
        self.banner: list[str] = []
        self._startup_timeout_s = startup_timeout_s
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._started = threading.Event()
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace").rstrip()
            if self.port is None:
                m = re.match(r"Serving on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    self._started.set()
                    continue
                self.banner.append(line)
        self._started.set()  # the process ended

    def wait_ready(self) -> int:
        self._started.wait(self._startup_timeout_s)
        if self.port is None:
            self.stop()
            log = self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise SystemExit(f"server {self.name} did not start (exit {self.proc.poll()}):\n{log}")
        return self.port

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process so far (all its threads)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def logged_traceback(self) -> bool:
        return self.log_path.exists() and "Traceback" in self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


def post(conn: http.client.HTTPConnection, body: Any) -> tuple[int, bytes]:
    """``POST /api`` with ``body`` as JSON on ``conn``: the status and the answer's bytes. The
    connection is closed when the server says it will close it."""
    conn.request("POST", "/api", body=json.dumps(body, ensure_ascii=False).encode("utf-8"), headers=HEADERS)
    resp = conn.getresponse()
    data = resp.read()
    if resp.will_close:
        conn.close()
    return resp.status, data


# =============================================================================== load
def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return total - idle, total


def _client(port: int, bodies: list[bytes], barrier: threading.Barrier, out: dict[str, Any], max_s: float) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lat: list[float] = []
    errors: list[str] = []
    connects = 0
    barrier.wait()
    deadline = time.perf_counter() + max_s
    for body in bodies:
        t0 = time.perf_counter()
        if t0 > deadline:  # a bounded run: stop sending, whatever is left
            out["stopped_early"] = True
            break
        try:
            if conn.sock is None:
                connects += 1
            conn.request("POST", "/api", body=body, headers=HEADERS)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        dt = time.perf_counter() - t0
        if status == 200:
            lat.append(dt)
        else:
            errors.append(f"HTTP {status}")
    conn.close()
    out.update(latencies=lat, errors=errors, connects=connects)


def percentiles(lat_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in lat_s)
    if len(ms) < 2:
        v = ms[0] if ms else float("nan")
        return {"p50_ms": v, "p95_ms": v, "p99_ms": v, "mean_ms": v, "max_ms": v}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "mean_ms": statistics.fmean(ms), "max_ms": ms[-1]}


def _run_clients(port: int, plans: list[list[bytes]], max_s: float, server: "Server") -> dict[str, Any]:
    """The clients released together: their outcomes, the wall time and the CPU counters around it."""
    outs: list[dict[str, Any]] = [{} for _ in plans]
    barrier = threading.Barrier(len(plans) + 1)
    threads = [threading.Thread(target=_client, args=(port, plan, barrier, out, max_s), daemon=True)
               for plan, out in zip(plans, outs)]
    for t in threads:
        t.start()
    before = resource.getrusage(resource.RUSAGE_SELF), server.cpu_s(), _machine_busy()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF), server.cpu_s(), _machine_busy()
    return {"outs": outs, "wall": wall, "before": before, "after": after}


def measure(server: Server, texts: list[str], clients: int, per_client: int, max_s: float = 600.0) -> dict[str, Any]:
    """One measurement: ``clients`` threads, each ``per_client`` requests from its own offset;
    a client sends no new request once ``max_s`` seconds have passed."""
    assert server.port is not None
    n = len(texts)
    plans = [[json.dumps(texts[(c * n // clients + i) % n], ensure_ascii=False).encode("utf-8")
              for i in range(per_client)] for c in range(clients)]
    run = _run_clients(server.port, plans, max_s, server)
    outs, wall = run["outs"], run["wall"]
    (ru0, srv0, (busy0, tot0)), (ru1, srv1, (busy1, tot1)) = run["before"], run["after"]
    lat = [x for o in outs for x in o["latencies"]]
    errors = [e for o in outs for e in o["errors"]]
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    cores = os.cpu_count() or 1
    machine_cores = cores * (busy1 - busy0) / (tot1 - tot0) if tot1 > tot0 else float("nan")
    rec = {
        "clients": clients,
        "requests": len(lat),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "stopped_early_by_time_bound": any(o.get("stopped_early") for o in outs),
        "wall_s": wall,
        "requests_per_s": len(lat) / wall,
        **percentiles(lat),
        "new_connections_per_request": sum(o["connects"] for o in outs) / max(1, clients * per_client),
        # CPU in cores (1.0 = one core busy all the measurement long)
        "client_cpu_cores": client_cpu / wall,
        "server_cpu_cores": (srv1 - srv0) / wall,
        "machine_cpu_cores": machine_cores,
    }
    rec["other_cpu_cores"] = rec["machine_cpu_cores"] - rec["client_cpu_cores"] - rec["server_cpu_cores"]
    rec["_lat"] = lat  # popped by the caller: pooled over rounds, not written per round
    return rec


def summarize(rounds: list[dict[str, Any]], latencies_by_round: list[list[float]]) -> dict[str, Any]:
    """A configuration over its rounds: requests/s as the median of the rounds (min, max beside it),
    latency percentiles over all rounds' requests pooled, CPU columns as medians."""
    rps = [r["requests_per_s"] for r in rounds]
    pooled = [x for lat in latencies_by_round for x in lat]
    out = {
        "clients": rounds[0]["clients"],
        "rounds": len(rounds),
        "requests": sum(r["requests"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "requests_per_s": statistics.median(rps),
        "requests_per_s_min": min(rps),
        "requests_per_s_max": max(rps),
        **percentiles(pooled),
    }
    for key in ("client_cpu_cores", "server_cpu_cores", "machine_cpu_cores", "other_cpu_cores", "new_connections_per_request"):
        out[key] = statistics.median(r[key] for r in rounds)
    out["stopped_early_by_time_bound"] = any(r["stopped_early_by_time_bound"] for r in rounds)
    out["per_round"] = rounds
    return out


def summarize_all(raw: dict[str, dict[int, list[tuple[dict[str, Any], list[float]]]]]) -> dict[str, dict[str, Any]]:
    """:func:`summarize` per server and client count of ``raw[name][clients] = [(round record, latencies), ...]``."""
    return {name: {str(c): summarize([x for x, _ in rounds], [lat for _, lat in rounds]) for c, rounds in per.items()}
            for name, per in raw.items()}


def run_rounds(servers: dict[str, Server], texts: list[str], client_counts: tuple[int, ...], rounds: int,
               per_client: int, max_s: float, before: Optional[Callable[[], dict[str, Any]]] = None) -> dict[str, Any]:
    """The measurements, interleaved by round (round r: every client count, every server), so that
    a drift of the machine's load hits every configuration alike. ``before`` runs before each
    measurement and adds its fields to the round's record. Returns ``raw[name][clients]`` =
    [(round record, latencies), ...], what :func:`summarize_all` takes."""
    raw: dict[str, Any] = {name: {c: [] for c in client_counts} for name in servers}
    for r in range(rounds):
        for c in client_counts:
            for name, server in servers.items():
                extra = before() if before else {}
                rec = measure(server, texts, c, per_client, max_s)
                rec.update(extra)
                print(f"round {r + 1}/{rounds} {name:14s} clients={c}: {rec['requests_per_s']:7.1f} req/s  "
                      f"p50 {rec['p50_ms']:6.2f} ms  p99 {rec['p99_ms']:6.2f} ms  client {rec['client_cpu_cores']:.2f} "
                      f"server {rec['server_cpu_cores']:.2f} other {rec['other_cpu_cores']:.2f} cores  errors {rec['errors']}",
                      flush=True)
                raw[name][c].append((rec, rec.pop("_lat")))
    return raw


# =============================================================================== other load
def other_benchmarks(pattern: re.Pattern = OTHER_BENCH) -> list[str]:
    """Command lines of other benchmark processes (bench/*.py; or ``pattern``) that are not this run's."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in mine:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() or "serve_bench.py" in cmd or "test_bench_serve" in cmd:
            continue
        if pattern.search(cmd):
            found.append(f"{d.name}: {cmd[:200]}")
    return sorted(found)


def machine_busy_cores(sample_s: float) -> float:
    """Cores the whole machine keeps busy over ``sample_s`` seconds (idle servers use ~none)."""
    b0, t0 = _machine_busy()
    time.sleep(sample_s)
    b1, t1 = _machine_busy()
    return (os.cpu_count() or 1) * (b1 - b0) / max(1, t1 - t0)


def _deadline(until: str) -> _dt.datetime:
    hh, mm = (int(x) for x in until.split(":"))
    return _dt.datetime.now().replace(hour=hh, minute=mm, second=0, microsecond=0)


def wait_for_quiet(until: str) -> dict[str, Any]:
    """Poll until no other benchmark runs and the machine is idle (twice in a row), or the
    wall clock (local HH:MM) reaches ``until``."""
    deadline = _deadline(until)
    t0 = time.time()
    calm = 0
    while True:
        others = other_benchmarks()
        busy = machine_busy_cores(3.0)
        calm = calm + 1 if not others and busy < MAX_OTHER_CPU_CORES else 0
        if calm >= 2 or _dt.datetime.now() >= deadline:
            break
        print(f"waiting (until {until}): {len(others)} other benchmark process(es), machine busy {busy:.2f} cores"
              + (f": {others[0][:100]}" if others else ""), flush=True)
        time.sleep(15 if calm else 30)
    return {"waited_s": round(time.time() - t0, 1), "until": until, "gave_up_waiting": calm < 2,
            "busy_cores_when_started": busy}


def quiet_gate(until: Optional[str], max_wait_s: float = 90.0) -> float:
    """Before a measurement (until ``until``): wait up to ``max_wait_s`` for the machine to be idle."""
    if not until:
        return 0.0
    deadline = _deadline(until)
    t0 = time.time()
    while _dt.datetime.now() < deadline and time.time() - t0 < max_wait_s:
        if machine_busy_cores(1.0) < MAX_OTHER_CPU_CORES:
            break
        time.sleep(4)
    return round(time.time() - t0, 1)

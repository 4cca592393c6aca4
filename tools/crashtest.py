"""Crash test and gateway fault soak: real processes, killed with SIGKILL, nothing lost.

    python tools/crashtest.py              500 orders, ~5,000 events, 20 kills, 5 of the gateway
    python tools/crashtest.py --fault-rate 0.3         the same under gateway faults (the soak)
    python tools/crashtest.py --orders 150 --events 750 --kills 4 --sandbox-kills 2 \
        --release-leases                                                            (CI size)
    python tools/crashtest.py --db postgresql+psycopg://user@127.0.0.1:5432/empty_db

Three processes run at once: the sandbox gateway (``kci-engine sandbox --record FILE``, recording
every KCI it accepts), an applier (``tools/crash_worker.py``, applying a deterministic plan of
lifecycles with event ids) and a dispatcher (``kci-engine dispatch``, ``KCI_CONCURRENCY`` 128 by
default). While events are being applied and delivered, the applier or the dispatcher (in turn)
is killed with SIGKILL at a random moment once it is doing work, and started again; at random
places among those kills the gateway is SIGKILLed too, and started again on the same port with
the same record file, which it reads back. Then everything is left to finish and the database
and the gateway's record (one file across all its restarts) are checked:

- every planned event is in the event log once, with exactly the KCIs an undisturbed run
  produces (replayed in memory): none missing (``lost``), none extra (``duplicated_in_outbox``);
- each order's KCIs are numbered 1..n without a gap (``gaps``), in the outbox and at the gateway;
- the gateway received every KCI (``lost``), each order's in sequence order (``reorderings``),
  and a KCI id it saw twice carried the same body both times (``different_bodies_same_id``);
- the record holds each KCI once (``received_twice_as_new``: a restarted gateway that forgot what
  it accepted takes a redelivery as new) and every line of it is a whole KCI (``record_damaged``);
- the gateway saw no contract or sequence violation, and no KCI is left undelivered or dead.

The gateway's counters (redeliveries, faults, 401s) die with each killed incarnation; the harness
reads them just before each kill, so for a run with gateway kills they are lower bounds.
``sandbox_accepted`` is what the last incarnation holds: what it took back from the record plus
what it accepted itself.

A dispatcher killed mid-delivery keeps its orders' leases until they run out (``KCI_LEASE_S``,
30 s by default); with ``--release-leases`` the harness releases a killed dispatcher's leases at
once, as a supervisor that knows the process is dead would (CI uses it to stay fast). A
dispatcher that stops by itself (only refused credentials should stop it) is restarted and
counted in ``dispatcher_exits``; a gateway that stops by itself, in ``sandbox_exits``. The
dispatcher serves ``/healthz``, which the harness reads every 50 ms for ``peak_in_flight``.

Progress lines go to stdout; the last line is one JSON object. Exit status 0 when every figure
that must be zero is zero.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # crash_worker, crash_checks

import httpx
import sqlalchemy as sa
from crash_checks import MUST_BE_ZERO, expected, gateway_totals, verify
from kci_engine.store.sql import SqlStore, create_db_engine
from kci_engine.store.tables import EVENTS, LEASES, OUTBOX, DeliveryState

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Role:
    """A process the harness runs, kills and restarts, with a log file per incarnation."""

    name: str
    argv: list[str]
    env: dict[str, str]
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    started_at: float = 0.0
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.incarnation += 1
        if self._log_file is not None:
            self._log_file.close()
        self._log_file = (self.logs / f"{self.name}-{self.incarnation}.log").open("wb")
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def tail(self, lines: int = 5) -> str:
        path = self.logs / f"{self.name}-{self.incarnation}.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])


class Gateway(Role):
    """The sandbox gateway: started on a free port, started again after a kill on the same port
    with the same record file (so it takes back what it accepted), each incarnation with a fault
    seed of its own."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        super().__init__("sandbox", [], os.environ.copy(), work)
        self.args = args
        self.record = work / "received.jsonl"
        self.port = 0
        self.root = ""
        self.last_stats: list[dict[str, Any]] = []  # of each killed incarnation, before the kill

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def start(self) -> None:
        """Start it and wait until it listens; a port still held a moment after a kill is
        tried again for a few seconds."""
        for attempt in itertools.count(1):
            self.argv = sandbox_argv(self.args, self.record, self.port, self.incarnation)
            super().start()
            found = self._wait_ready(30.0)
            if found is not None:
                self.root = found
                self.port = int(found.rsplit(":", 1)[1])
                return
            if attempt >= 10 or self.port == 0:
                raise SystemExit(f"the sandbox gateway did not start: {self.tail()}")
            time.sleep(0.5)

    def _wait_ready(self, timeout: float) -> str | None:
        """Its root URL once it has printed its first line; ``None`` if it stopped first."""
        path = self.logs / f"{self.name}-{self.incarnation}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
            found = re.search(r"(http://\S+)/v1", text)
            if found is not None:
                return found.group(1)
            if self.exited() is not None:
                return None
            time.sleep(0.02)
        self.kill()
        return None

    def stats(self) -> dict[str, Any] | None:
        """Its counters now (``None`` if it does not answer)."""
        try:
            answer: dict[str, Any] = httpx.get(self.root + "/_sandbox/stats", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None
        return answer

    def kill_and_restart(self, down_s: float) -> None:
        """Read its counters, SIGKILL it, leave the port closed ``down_s``, start it again."""
        self.last_stats.append(self.stats() or {})
        self.kill()
        time.sleep(down_s)
        self.start()


def sandbox_argv(args: argparse.Namespace, record: Path, port: int, incarnation: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kci_engine.cli",
        "sandbox",
        "--port",
        str(port),
        "--record",
        str(record),
        "--fault-rate",
        str(args.fault_rate),
        "--seed",
        str(args.seed + incarnation),
        "--slow-seconds",
        str(args.slow_seconds),
        "--latency-ms",
        str(args.gateway_latency_ms),
        "--jitter-ms",
        str(args.gateway_latency_ms / 2),
    ]


def dispatcher_env(url: str, gateway: str, args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCI_")}
    env.update(
        KCI_ENGINE_DB=url,
        KCI_GATEWAY_URL=gateway,
        KCI_CLIENT_ID="sandbox-client",
        KCI_CLIENT_SECRET="sandbox-secret",
        KCI_CONCURRENCY=str(args.concurrency),
        KCI_TIMEOUT_S=str(args.timeout_s),
        KCI_RETRY_BASE_S="0.05",
        KCI_RETRY_CAP_S="1",
        KCI_POLL_S="0.05",
    )
    return env


class Progress:
    """Counters read from the database while the processes run."""

    def __init__(self, url: str) -> None:
        self.db = create_db_engine(url)

    def events(self) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(EVENTS)).scalar_one())

    def states(self) -> dict[str, int]:
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(OUTBOX.c.delivery_state, sa.func.count()).group_by(
                    OUTBOX.c.delivery_state
                )
            ).all()
        return {str(state): int(count) for state, count in rows}

    def delivered(self) -> int:
        return self.states().get(DeliveryState.DELIVERED, 0)

    def leases_of(self, pid: int) -> int:
        owner = f"{socket.gethostname()}:{pid}:%"
        with self.db.connect() as conn:
            query = (
                sa.select(sa.func.count())
                .select_from(LEASES)
                .where(LEASES.c.owner.like(owner))
                .where(LEASES.c.until_ms > 0)
            )
            return int(conn.execute(query).scalar_one())

    def release_leases_of(self, pid: int) -> int:
        owner = f"{socket.gethostname()}:{pid}:%"
        with self.db.begin() as conn:
            result = conn.execute(
                LEASES.update().where(LEASES.c.owner.like(owner)).values(owner=None, until_ms=0)
            )
            return int(result.rowcount)

    def close(self) -> None:
        self.db.dispose()


@dataclass
class RunStats:
    kills: int = 0
    kills_applier: int = 0
    kills_dispatcher: int = 0
    kills_sandbox: int = 0
    dispatcher_exits: int = 0
    dispatcher_exit_reasons: list[str] = field(default_factory=list)
    sandbox_exits: int = 0
    applier_failures: int = 0
    leases_left_by_killed_dispatchers: int = 0
    leases_released: int = 0
    applied_at: float = 0.0
    delivered_at: float = 0.0


@dataclass
class Crew:
    """The three processes of a run."""

    applier: Role
    dispatcher: Role
    gateway: Gateway


class InFlight(threading.Thread):
    """Reads the dispatcher's ``/healthz`` every 50 ms and keeps the most requests it had in
    flight at once (a sample: the true peak may be higher)."""

    def __init__(self, port: int) -> None:
        super().__init__(name="in-flight", daemon=True)
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=1.0) as http:
            while not self.done.wait(0.05):
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    self.peak = max(self.peak, int(http.get(self.url).json()["in_flight"]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Any, timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return bool(condition())


def supervise(crew: Crew, stats: RunStats) -> tuple[bool, bool]:
    """Restart a dispatcher that stopped by itself (and a gateway, which must never stop by
    itself: counted in ``sandbox_exits``); report (applier done, applier failed)."""
    dispatcher, applier, gateway = crew.dispatcher, crew.applier, crew.gateway
    code = gateway.exited()
    if code is not None:
        stats.sandbox_exits += 1
        log(f"the sandbox gateway stopped by itself (exit {code}): {gateway.tail()}; restarting")
        gateway.last_stats.append({})
        gateway.start()
    code = dispatcher.exited()
    if code is not None:
        stats.dispatcher_exits += 1
        stats.dispatcher_exit_reasons.append(f"exit {code}: {dispatcher.tail(2)}"[:300])
        log(f"dispatcher stopped by itself (exit {code}); restarting it")
        dispatcher.start()
    code = applier.exited()
    if code is None:
        return False, False
    if code == 0:
        return True, False
    stats.applier_failures += 1
    log(f"applier failed (exit {code}): {applier.tail()}")
    return True, True


def run_kills(args: argparse.Namespace, crew: Crew, progress: Progress, stats: RunStats) -> None:
    """Kill the applier or the dispatcher ``args.kills`` times, and the gateway
    ``args.sandbox_kills`` times at random places among them, each at a random moment once the
    process has made progress since it (re)started."""
    rng = random.Random(args.seed * 7919 + 1)
    total = args.kills + args.sandbox_kills
    gateway_turns = set(rng.sample(range(total), args.sandbox_kills))
    # The applier first: a run whose kills fall behind their slots (a loaded machine, slow
    # restarts) may find the paced applier finished by its turn, and then it would not be killed.
    turn = 0
    applier_done = False
    started = time.monotonic()
    while stats.kills + stats.kills_sandbox < total:
        done = stats.kills + stats.kills_sandbox
        # Spread the kills over the time the plan takes to apply.
        slot = (done + rng.uniform(0.1, 0.9)) * args.apply_seconds / total
        while time.monotonic() < started + slot and not crew.applier.exited():
            supervise(crew, stats)
            time.sleep(0.05)
        finished, failed = supervise(crew, stats)
        applier_done = applier_done or finished
        if failed:
            return
        victim: Role
        if done in gateway_turns:
            victim = crew.gateway
        else:
            victim = crew.dispatcher if applier_done or turn % 2 else crew.applier
            turn += 1
        metric = progress.events if victim is crew.applier else progress.delivered
        baseline = metric()

        def busy(metric: Any = metric, baseline: int = baseline, victim: Role = victim) -> bool:
            return metric() > baseline or victim.exited() is not None

        # Kill only once it is doing work (past its start-up), then at a random moment.
        working = wait_for(busy, 15)
        if victim.exited() is not None:
            continue  # finished (applier) or stopped by itself (dispatcher): next turn
        time.sleep(rng.uniform(0.0, args.max_kill_delay_s))
        if victim.exited() is not None:
            continue
        pid = victim.pid
        if victim is crew.gateway:
            crew.gateway.kill_and_restart(rng.uniform(0.0, args.max_sandbox_down_s))
            stats.kills_sandbox += 1
            log(
                f"sandbox kill {stats.kills_sandbox}/{args.sandbox_kills}: SIGKILL the gateway "
                f"(pid {pid}{'' if working else ', idle'}), started again on port "
                f"{crew.gateway.port}; KCIs {progress.states()}"
            )
            continue
        victim.kill()
        stats.kills += 1
        if victim is crew.applier:
            stats.kills_applier += 1
        else:
            stats.kills_dispatcher += 1
            held = progress.leases_of(pid)
            stats.leases_left_by_killed_dispatchers += held
            if args.release_leases:
                stats.leases_released += progress.release_leases_of(pid)
        log(
            f"kill {stats.kills}/{args.kills}: SIGKILL {victim.name} (pid {pid}"
            f"{'' if working else ', idle'}); events logged {progress.events()}, "
            f"KCIs {progress.states()}"
        )
        victim.start()


def finish(
    crew: Crew,
    progress: Progress,
    stats: RunStats,
    deadline: float,
) -> None:
    """Let the applier finish its plan and the dispatcher deliver everything."""
    while time.monotonic() < deadline:
        done, failed = supervise(crew, stats)
        if done or failed:
            break
        time.sleep(0.1)
    log(f"applier finished; events logged {progress.events()}; waiting for delivery")
    stats.applied_at = time.monotonic()
    last = 0.0
    while time.monotonic() < deadline:
        supervise(crew, stats)
        states = progress.states()
        if not states.get(DeliveryState.PENDING) or states.get(DeliveryState.DEAD):
            break
        if time.monotonic() - last > 10:
            log(f"delivering: {states}")
            last = time.monotonic()
        time.sleep(0.1)
    stats.delivered_at = time.monotonic()


def prepare_database(url: str) -> None:
    store = SqlStore(url)  # creates or upgrades the schema before the workers start
    try:
        if next(store.order_ids(), None) is not None:
            raise SystemExit(f"{url}: the database already holds orders; give an empty one")
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--events", type=int, default=5000, help="events in all (about)")
    parser.add_argument("--kills", type=int, default=20, help="of the applier and dispatcher")
    parser.add_argument(
        "--sandbox-kills",
        type=int,
        default=5,
        help="of the sandbox gateway, at random places among the other kills",
    )
    parser.add_argument("--fault-rate", type=float, default=0.0, help="gateway fault rate, 0..1")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--db", help="database URL (default: a SQLite file in the work dir)")
    parser.add_argument("--concurrency", type=int, default=128, help="KCI_CONCURRENCY")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="KCI_TIMEOUT_S")
    parser.add_argument(
        "--slow-seconds", type=float, help="delay of a 'slow' fault (default: 1.5 x timeout)"
    )
    parser.add_argument(
        "--max-kill-delay-s",
        type=float,
        default=1.0,
        help="a process is killed at a random moment up to this long after it starts working",
    )
    parser.add_argument(
        "--max-sandbox-down-s",
        type=float,
        default=1.0,
        help="a killed gateway is started again after a random pause up to this long",
    )
    parser.add_argument(
        "--gateway-latency-ms",
        type=float,
        default=0.0,
        help="the gateway answers after this long, give or take half of it (a real one's pace)",
    )
    parser.add_argument(
        "--release-leases",
        action="store_true",
        help="release a killed dispatcher's leases at once instead of letting them run out",
    )
    parser.add_argument(
        "--apply-seconds",
        type=float,
        help="pace the applier to take about this long (default: 2.5 s a kill of any "
        "process), so that the "
        "kills fall while events are being applied and delivered",
    )
    parser.add_argument("--max-seconds", type=float, default=1200, help="give up after this")
    parser.add_argument("--workdir", type=Path, help="keep logs, record and database here")
    args = parser.parse_args()
    if args.slow_seconds is None:
        args.slow_seconds = round(args.timeout_s * 1.5, 3)
    if args.apply_seconds is None:
        args.apply_seconds = max(5.0, 2.5 * (args.kills + args.sandbox_kills))

    started = time.monotonic()
    deadline = started + args.max_seconds
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kci-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    url = args.db or f"sqlite:///{work / 'crash.db'}"
    log(f"work dir {work}; database {url.split('@')[-1]}")
    prepare_database(url)
    want = expected(args)
    kcis = sum(map(len, want.reasons.values()))
    log(f"plan: {args.orders} orders, {want.events} events, {kcis} KCIs")

    gateway = Gateway(work, args)
    gateway.start()
    log(f"sandbox gateway {gateway.base_url}, fault rate {args.fault_rate}")
    applier = Role(
        "applier",
        [
            sys.executable,
            str(ROOT / "tools" / "crash_worker.py"),
            "--db",
            url,
            "--orders",
            str(args.orders),
            "--events",
            str(args.events),
            "--seed",
            str(args.seed),
            "--rate",
            str(round((args.orders + want.events) / args.apply_seconds, 2)),
        ],
        {**os.environ},
        work,
    )
    metrics_port = free_port()
    dispatcher = Role(
        "dispatcher",
        [sys.executable, "-m", "kci_engine.cli", "dispatch", "--metrics-port", str(metrics_port)],
        dispatcher_env(url, gateway.base_url, args),
        work,
    )
    crew = Crew(applier, dispatcher, gateway)
    in_flight = InFlight(metrics_port)
    progress = Progress(url)
    stats = RunStats()
    last: dict[str, Any] = {}
    try:
        applier.start()
        dispatcher.start()
        in_flight.start()
        run_kills(args, crew, progress, stats)
        finish(crew, progress, stats, deadline)
        dispatcher.stop()
        applier.stop()
        last = gateway.stats() or {}
    finally:
        in_flight.done.set()
        for role in (dispatcher, applier, gateway):
            role.stop(timeout=10)
        progress.close()

    summary: dict[str, Any] = {
        "orders": args.orders,
        "kills": stats.kills,
        "kills_applier": stats.kills_applier,
        "kills_dispatcher": stats.kills_dispatcher,
        "kills_sandbox": stats.kills_sandbox,
        "concurrency": args.concurrency,
        "peak_in_flight": in_flight.peak,
    }
    gateway_stats = gateway_totals(gateway.last_stats, last)
    summary.update(verify(url, gateway.record, gateway_stats, want))
    summary.update(
        {
            "applier_failures": stats.applier_failures,
            "sandbox_exits": stats.sandbox_exits,
            "dispatcher_exits": stats.dispatcher_exits,
            "dispatcher_exit_reasons": stats.dispatcher_exit_reasons[:5],
            "leases_left_by_killed_dispatchers": stats.leases_left_by_killed_dispatchers,
            "leases_released_by_harness": stats.leases_released,
            "apply_seconds": round(stats.applied_at - started, 1),
            "delivery_wait_seconds": round(stats.delivered_at - stats.applied_at, 1),
            "fault_rate": args.fault_rate,
            "database": url.split(":", 1)[0],
            "seed": args.seed,
            "seconds": round(time.monotonic() - started, 1),
            "machine": f"{os.cpu_count()} CPU, {platform.system()} {platform.machine()}, "
            f"CPython {platform.python_version()}",
        }
    )
    failed = [name for name in MUST_BE_ZERO if summary[name]]
    if stats.kills < args.kills:
        failed.append("kills")
    if stats.kills_sandbox < args.sandbox_kills:
        failed.append("sandbox_kills")
    summary["ok"] = not failed
    if failed:
        log(f"FAILED: {', '.join(failed)}; logs kept in {work}")
    elif args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Crash test and gateway fault soak: real processes, killed with SIGKILL, nothing lost.

    python tools/crashtest.py                          500 orders, ~5,000 events, 20 kills
    python tools/crashtest.py --fault-rate 0.3         the same under gateway faults (the soak)
    python tools/crashtest.py --orders 60 --events 600 --kills 5 --release-leases   (CI size)
    python tools/crashtest.py --db postgresql+psycopg://user@127.0.0.1:5432/empty_db

Three processes run at once: the sandbox gateway (``kci-engine sandbox``, recording every KCI it
accepts), an applier (``tools/crash_worker.py``, applying a deterministic plan of lifecycles with
event ids) and a dispatcher (``kci-engine dispatch``). While events are being applied and
delivered, the applier or the dispatcher (in turn) is killed with SIGKILL at a random moment once
it is doing work, and started again; the gateway is never killed. Then everything is left to
finish and the database and the gateway's record are checked:

- every planned event is in the event log once, with exactly the KCIs an undisturbed run
  produces (replayed in memory): none missing (``lost``), none extra (``duplicated_in_outbox``);
- each order's KCIs are numbered 1..n without a gap (``gaps``), in the outbox and at the gateway;
- the gateway received every KCI (``lost``), each order's in sequence order (``reorderings``),
  and a KCI id it saw twice carried the same body both times (``different_bodies_same_id``);
- the gateway saw no contract or sequence violation, and no KCI is left undelivered or dead.

A dispatcher killed mid-delivery keeps its orders' leases until they run out (120 s); with
``--release-leases`` the harness releases a killed dispatcher's leases at once, as a supervisor
that knows the process is dead would (CI uses it to stay fast). A dispatcher that stops by itself
(e.g. it took two 401s in a row from injected token-expiry faults) is restarted and counted in
``dispatcher_exits``.

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
import queue
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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # crash_worker

import httpx
import sqlalchemy as sa
from crash_worker import plan
from kci_engine import Engine
from kci_engine.store.sql import SqlStore, create_db_engine
from kci_engine.store.tables import EVENTS, LEASES, OUTBOX, DeliveryState
from kci_engine.tooling.sandbox import order_key

ROOT = Path(__file__).resolve().parent.parent

#: Figures that must be zero for the run to pass.
MUST_BE_ZERO = (
    "lost",
    "duplicated_in_outbox",
    "gaps",
    "reorderings",
    "different_bodies_same_id",
    "events_missing",
    "undelivered",
    "sandbox_violations",
    "unknown_received",
    "applier_failures",
)


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


def start_sandbox(work: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    """The sandbox gateway as a subprocess on a free loopback port; its base URL."""
    record = work / "received.jsonl"
    command = [
        sys.executable,
        "-m",
        "kci_engine.cli",
        "sandbox",
        "--port",
        "0",
        "--record",
        str(record),
        "--fault-rate",
        str(args.fault_rate),
        "--seed",
        str(args.seed),
        "--slow-seconds",
        str(args.slow_seconds),
    ]
    stderr = (work / "sandbox.log").open("w", encoding="utf-8")
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True, env=os.environ.copy()
    )
    stderr.close()
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        first = lines.get(timeout=30)
    except queue.Empty:
        process.kill()
        raise SystemExit("the sandbox gateway did not start in 30 s") from None
    found = re.search(r"(http://\S+/v1)", first)
    if found is None:
        process.kill()
        raise SystemExit(f"unexpected sandbox output: {first!r}")
    return process, found.group(1)


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
    dispatcher_exits: int = 0
    dispatcher_exit_reasons: list[str] = field(default_factory=list)
    applier_failures: int = 0
    leases_left_by_killed_dispatchers: int = 0
    leases_released: int = 0
    applied_at: float = 0.0
    delivered_at: float = 0.0


def wait_for(condition: Any, timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return bool(condition())


def supervise(
    applier: Role, dispatcher: Role, progress: Progress, stats: RunStats
) -> tuple[bool, bool]:
    """Restart a dispatcher that stopped by itself; report (applier done, applier failed)."""
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


def run_kills(
    args: argparse.Namespace, applier: Role, dispatcher: Role, progress: Progress, stats: RunStats
) -> None:
    """Kill the applier or the dispatcher ``args.kills`` times, each at a random moment once
    the process has made progress since it (re)started."""
    rng = random.Random(args.seed * 7919 + 1)
    turn = rng.randrange(2)
    applier_done = False
    started = time.monotonic()
    while stats.kills < args.kills:
        # Spread the kills over the time the plan takes to apply.
        slot = (stats.kills + rng.uniform(0.1, 0.9)) * args.apply_seconds / args.kills
        while time.monotonic() < started + slot and not applier.exited():
            supervise(applier, dispatcher, progress, stats)
            time.sleep(0.05)
        done, failed = supervise(applier, dispatcher, progress, stats)
        applier_done = applier_done or done
        if failed:
            return
        victim = dispatcher if applier_done or turn % 2 else applier
        turn += 1
        metric = progress.events if victim is applier else progress.delivered
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
        victim.kill()
        stats.kills += 1
        if victim is applier:
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
    args: argparse.Namespace,
    applier: Role,
    dispatcher: Role,
    progress: Progress,
    stats: RunStats,
    deadline: float,
) -> None:
    """Let the applier finish its plan and the dispatcher deliver everything."""
    while time.monotonic() < deadline:
        done, failed = supervise(applier, dispatcher, progress, stats)
        if done or failed:
            break
        time.sleep(0.1)
    log(f"applier finished; events logged {progress.events()}; waiting for delivery")
    stats.applied_at = time.monotonic()
    last = 0.0
    while time.monotonic() < deadline:
        supervise(applier, dispatcher, progress, stats)
        states = progress.states()
        if not states.get(DeliveryState.PENDING) or states.get(DeliveryState.DEAD):
            break
        if time.monotonic() - last > 10:
            log(f"delivering: {states}")
            last = time.monotonic()
        time.sleep(0.1)
    stats.delivered_at = time.monotonic()


@dataclass
class Expected:
    """What an undisturbed run produces: per order, the KCIs of each event."""

    reasons: dict[str, list[str]]  # order id -> reason codes in sequence order
    per_event: dict[tuple[str, str], int]  # (order id, event id) -> KCIs it produces
    events: int


def expected(args: argparse.Namespace) -> Expected:
    plans, _ = plan(args.seed, args.orders, args.events)
    engine = Engine()
    reasons: dict[str, list[str]] = {}
    per_event: dict[tuple[str, str], int] = {}
    events = 0
    for one in plans:
        engine.accept_order(one.order_type, one.order, order_id=one.order_id, event_id="accept")
        per_event[(one.order_id, "accept")] = 0
        for position, (event, data) in enumerate(one.steps):
            kcis = engine.apply(one.order_id, event, data)
            per_event[(one.order_id, f"e{position}")] = len(kcis)
            events += 1
        reasons[one.order_id] = [k.reason_code.value for k in engine.kcis(one.order_id)]
    return Expected(reasons, per_event, events)


def verify(url: str, record: Path, gateway_stats: dict[str, Any], want: Expected) -> dict[str, Any]:
    """Every figure of the summary, from the database and the gateway's record."""
    db = create_db_engine(url)
    with db.connect() as conn:
        outbox = [
            dict(row._mapping)
            for row in conn.execute(
                sa.select(
                    OUTBOX.c.kci_id,
                    OUTBOX.c.order_id,
                    OUTBOX.c.sequence_number,
                    OUTBOX.c.reason_code,
                    OUTBOX.c.body,
                    OUTBOX.c.delivery_state,
                    OUTBOX.c.attempts,
                    OUTBOX.c.last_error,
                )
            )
        ]
        logged = [
            dict(row._mapping)
            for row in conn.execute(
                sa.select(EVENTS.c.order_id, EVENTS.c.event_id, EVENTS.c.kci_ids).order_by(
                    EVENTS.c.seq
                )
            )
        ]
    db.dispose()
    by_id = {row["kci_id"]: row for row in outbox}
    per_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in outbox:
        per_order[row["order_id"]].append(row)

    # The event log against the plan: each planned call once, with the KCIs it should have.
    seen_events = Counter((e["order_id"], e["event_id"]) for e in logged)
    events_twice = sum(n - 1 for n in seen_events.values() if n > 1)
    unexpected_events = sum(1 for key in seen_events if key not in want.per_event)
    events_missing = sum(1 for key in want.per_event if key not in seen_events)
    events_applied = sum(1 for (_, eid) in seen_events if eid != "accept")
    referenced: Counter[str] = Counter()
    extra_kcis = missing_kcis = 0
    for entry in logged:
        ids = json.loads(entry["kci_ids"])
        referenced.update(ids)
        wanted = want.per_event.get((entry["order_id"], entry["event_id"]), 0)
        extra_kcis += max(0, len(ids) - wanted)
        missing_kcis += max(0, wanted - len(ids))
        missing_kcis += sum(1 for kci_id in ids if kci_id not in by_id)
    orphans = sum(1 for kci_id in by_id if kci_id not in referenced)
    shared = sum(n - 1 for n in referenced.values() if n > 1)
    wrong_reasons = 0
    gaps = 0
    for order_id, rows in per_order.items():
        rows.sort(key=lambda r: r["sequence_number"])
        numbers = [r["sequence_number"] for r in rows]
        gaps += (
            len(set(range(1, max(numbers) + 1)) - set(numbers)) + len(numbers) - len(set(numbers))
        )
        if [r["reason_code"] for r in rows] != want.reasons.get(order_id):
            wrong_reasons += 1
    missing_orders = sum(
        1 for order_id, r in want.reasons.items() if r and order_id not in per_order
    )

    # What the gateway received: first acceptances, in arrival order.
    received = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    received_ids = Counter(str(body["id"]) for body in received)
    arrival: dict[str, list[int]] = defaultdict(list)
    for body in received:
        arrival[order_key(body)].append(int(body["sequenceNumber"]))
    reorderings = 0
    received_gaps = 0
    for numbers in arrival.values():
        reorderings += sum(1 for a, b in itertools.pairwise(numbers) if b < a)
        received_gaps += sum(1 for a, b in itertools.pairwise([0, *numbers]) if b > a + 1)
    different = sum(
        1
        for body in received
        if str(body["id"]) in by_id and json.loads(by_id[str(body["id"])]["body"]) != body
    )
    different += sum(
        1 for row in outbox if "different body" in (row["last_error"] or "")
    )  # refused by the gateway as a reused id
    sequence_refusals = sum(
        1
        for row in outbox
        if row["delivery_state"] == DeliveryState.DEAD
        and re.search(r"sequenceNumber|issuedOn", row["last_error"] or "")
    )
    not_received = sum(1 for kci_id in by_id if kci_id not in received_ids)
    states = Counter(row["delivery_state"] for row in outbox)
    return {
        "events_planned": want.events,
        "events_applied": events_applied,
        "events_missing": events_missing,
        "kcis": len(outbox),
        "kcis_expected": sum(len(r) for r in want.reasons.values()),
        "lost": not_received + missing_kcis + missing_orders,
        "duplicated_in_outbox": extra_kcis + orphans + shared + events_twice + unexpected_events,
        "orders_with_wrong_kcis": wrong_reasons,
        "gaps": gaps + received_gaps,
        "reorderings": reorderings + sequence_refusals,
        "redeliveries": int(gateway_stats.get("redelivered", 0)),
        "different_bodies_same_id": different,
        "received_twice_as_new": sum(n - 1 for n in received_ids.values() if n > 1),
        "unknown_received": sum(1 for kci_id in received_ids if kci_id not in by_id),
        "undelivered": states.get(DeliveryState.PENDING, 0) + states.get(DeliveryState.DEAD, 0),
        "dead_letters": states.get(DeliveryState.DEAD, 0),
        "delivery_attempts": sum(int(row["attempts"]) for row in outbox),
        "sandbox_accepted": int(gateway_stats.get("accepted", 0)),
        "sandbox_violations": int(gateway_stats.get("violations", 0)),
        "sandbox_rejected": gateway_stats.get("rejected", {}),
        "faults_injected": gateway_stats.get("faults", {}),
        "tokens_issued": int(gateway_stats.get("tokens_issued", 0)),
    }


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
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="gateway fault rate, 0..1")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--db", help="database URL (default: a SQLite file in the work dir)")
    parser.add_argument("--concurrency", type=int, default=8, help="KCI_CONCURRENCY")
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
        "--release-leases",
        action="store_true",
        help="release a killed dispatcher's leases at once instead of letting them run out",
    )
    parser.add_argument(
        "--apply-seconds",
        type=float,
        help="pace the applier to take about this long (default: 2.5 s a kill), so that the "
        "kills fall while events are being applied and delivered",
    )
    parser.add_argument("--max-seconds", type=float, default=1200, help="give up after this")
    parser.add_argument("--workdir", type=Path, help="keep logs, record and database here")
    args = parser.parse_args()
    if args.slow_seconds is None:
        args.slow_seconds = round(args.timeout_s * 1.5, 3)
    if args.apply_seconds is None:
        args.apply_seconds = max(5.0, 2.5 * args.kills)

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

    sandbox, gateway = start_sandbox(work, args)
    log(f"sandbox gateway {gateway}, fault rate {args.fault_rate}")
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
    dispatcher = Role(
        "dispatcher",
        [sys.executable, "-m", "kci_engine.cli", "dispatch"],
        dispatcher_env(url, gateway, args),
        work,
    )
    progress = Progress(url)
    stats = RunStats()
    gateway_stats: dict[str, Any] = {}
    try:
        applier.start()
        dispatcher.start()
        run_kills(args, applier, dispatcher, progress, stats)
        finish(args, applier, dispatcher, progress, stats, deadline)
        dispatcher.stop()
        applier.stop()
        with contextlib.suppress(httpx.HTTPError):
            root = gateway.rsplit("/v1", 1)[0]
            gateway_stats = httpx.get(root + "/_sandbox/stats", timeout=10).json()
    finally:
        for role in (dispatcher, applier):
            role.stop(timeout=10)
        sandbox.send_signal(signal.SIGTERM)
        try:
            sandbox.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sandbox.kill()
        progress.close()

    summary: dict[str, Any] = {
        "orders": args.orders,
        "kills": stats.kills,
        "kills_applier": stats.kills_applier,
        "kills_dispatcher": stats.kills_dispatcher,
    }
    summary.update(verify(url, work / "received.jsonl", gateway_stats, want))
    summary.update(
        {
            "applier_failures": stats.applier_failures,
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
    summary["ok"] = not failed
    if failed:
        log(f"FAILED: {', '.join(failed)}; logs kept in {work}")
    elif args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``kci-engine replay`` and ``kci-engine record`` commands.

Both are plain :class:`click.Command` objects the main command group registers. ``replay``
exits 1 if any scenario fails, so it can gate CI; ``record`` writes golden transcripts.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ...errors import EngineError, ScenarioError
from .coverage import Coverage
from .model import Scenario
from .replay import Result, replay

if TYPE_CHECKING:
    from types import ModuleType

    from ...store.sql import SqlStore


def _scenario_files() -> ModuleType:
    """The scenario-file modules, which need PyYAML (the ``scenarios`` extra)."""
    try:
        from . import transcript
    except ImportError as missing:
        raise click.ClickException(
            f"scenario files need the scenarios extra: pip install 'kci-engine[scenarios]' "
            f"({missing})"
        ) from None
    return transcript


Job = tuple[str, Callable[[], Result]]


@contextmanager
def _store(db_url: str | None) -> Iterator[SqlStore | None]:
    if db_url is None:
        yield None
        return
    from ...store.sql import SqlStore  # imported here: SQLAlchemy is slow to load

    try:
        store = SqlStore(db_url)
    except EngineError as exc:
        raise click.ClickException(exc.message) from None
    try:
        yield store
    finally:
        store.close()


def _files(paths: tuple[Path, ...]) -> tuple[list[Path], int, list[str]]:
    """Scenario files, the number of transcripts passed along with them, and path errors."""
    found: list[Path] = []
    transcripts = 0
    errors: list[str] = []
    for path in paths:
        try:
            files, skipped = _scenario_files().discover([path])
        except ScenarioError as exc:
            errors.append(exc.message)
            continue
        found.extend(f for f in files if f not in found)
        transcripts += len(skipped)
    return found, transcripts, errors


@click.command("replay")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--jsonl",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every KCI body the replays produced, one JSON object a line.",
)
@click.option(
    "--db",
    "db_url",
    help="Replay on this database (sqlite:///FILE or postgresql+psycopg://...) instead of in "
    "memory; each order's key is prefixed with the run and scenario, so runs can share it.",
)
@click.option(
    "--generated",
    is_flag=True,
    help="Also replay the lifecycles generated from the machines: a shortest path to every "
    "transition, every guard broken once, every event refused where it is not allowed.",
)
@click.option("--no-transcripts", is_flag=True, help="Do not compare with golden transcripts.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: when stdout is a terminal).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print failures and the summary only.")
@click.option("--show-missing", is_flag=True, help="Name every transition no scenario took.")
def replay_command(
    paths: tuple[Path, ...],
    jsonl: Path | None,
    db_url: str | None,
    generated: bool,
    no_transcripts: bool,
    progress: bool | None,
    quiet: bool,
    show_missing: bool,
) -> None:
    """Replay scenario files (*.kci.yaml, or directories of them) on a fresh engine each, and
    print pass or fail with a diff of expected (-) against actual (+) KCIs. Exits 1 if any
    fails. Golden transcripts (*.transcript.json) given too are compared with their
    scenarios, not replayed."""
    if not paths and not generated:
        raise click.UsageError("give scenario files or directories, or --generated")
    files, transcripts, errors = _files(paths)
    run = uuid.uuid4().hex[:8]
    failed = len(errors)
    for message in errors:
        click.echo(f"ERROR {message}")
    coverage = Coverage()
    produced: list[str] = []
    with _store(db_url) as store:
        jobs = _jobs(files, generated, store, run, transcripts=not no_transcripts)
        show = progress if progress is not None else sys.stdout.isatty()
        lines: list[str] = []
        echo = lines.append if show else click.echo
        with _bar(jobs, show) as bar:
            for name, job in bar:
                try:
                    result = job()
                except ScenarioError as exc:
                    failed += 1
                    echo(f"ERROR {exc.message}")
                    continue
                except Exception as exc:  # a crash in one scenario must not hide the others
                    failed += 1
                    echo(f"ERROR {name}: crashed: {type(exc).__name__}: {exc}")
                    continue
                coverage.add(result.scenario.order_type, result.edges)
                produced.extend(kci.json() for kci in result.kcis)
                if not result.passed:
                    failed += 1
                    echo(f"FAIL {result.report()}")
                elif not quiet:
                    echo(f"PASS {name}")
        for line in lines:
            click.echo(line)
    if jsonl is not None:
        _write_jsonl(jsonl, produced)
    skipped = f" ({transcripts} transcript paths skipped: each scenario is held to its own)"
    click.echo(
        f"\n{len(jobs)} scenarios: {len(jobs) + len(errors) - failed} passed, {failed} failed"
        + (skipped if transcripts else "")
    )
    for line in coverage.lines(detail=10_000 if show_missing else 0):
        click.echo(line)
    if failed:
        sys.exit(1)


def _jobs(
    files: list[Path], generated: bool, store: SqlStore | None, run: str, *, transcripts: bool
) -> list[Job]:
    def prefix(index: int) -> str:
        return f"replay-{run}/{index}/" if store is not None else ""

    def from_file(index: int, path: Path) -> Job:
        return str(path), lambda: _scenario_files().replay_file(
            path, store=store, order_prefix=prefix(index), transcripts=transcripts
        )

    def from_model(index: int, name: str, scenario: Scenario) -> Job:
        return name, lambda: replay(scenario, name=name, store=store, order_prefix=prefix(index))

    jobs = [from_file(index, path) for index, path in enumerate(files)]
    if generated:
        from .refusals import generated_scenarios

        for index, (name, scenario) in enumerate(generated_scenarios(), len(jobs)):
            jobs.append(from_model(index, name, scenario))
    return jobs


@contextmanager
def _bar(jobs: list[Job], show: bool) -> Iterator[Iterator[Job]]:
    if not show:
        yield iter(jobs)
        return
    with click.progressbar(jobs, label="replaying", file=sys.stderr, show_pos=True) as bar:
        yield iter(bar)


def _write_jsonl(path: Path, bodies: list[str]) -> None:
    try:
        with path.open("w", encoding="utf-8") as out:
            out.writelines(body + "\n" for body in bodies)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    click.echo(f"{len(bodies)} KCI bodies written to {path}")


@click.command("record")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--force", is_flag=True, help="Record even a scenario whose own expectations fail.")
def record_command(paths: tuple[Path, ...], force: bool) -> None:
    """Replay scenario files and write each one's golden transcript next to it
    (x.kci.yaml -> x.transcript.json): every KCI body, ids and issuedOn normalised. Review
    the diff and commit it; replay then fails on any change in what the engine would send."""
    files, _, errors = _files(paths)
    failed = len(errors)
    for message in errors:
        click.echo(f"ERROR {message}")
    for path in files:
        try:
            result = _scenario_files().replay_file(path, transcripts=False)
        except ScenarioError as exc:
            failed += 1
            click.echo(f"ERROR {exc.message}")
            continue
        if not result.passed and not force:
            failed += 1
            click.echo(f"FAIL {result.report()}\n  not recorded (use --force to record anyway)")
            continue
        target = _scenario_files().transcript_path(path)
        before = target.read_text(encoding="utf-8") if target.exists() else None
        _scenario_files().record(result, path)
        after = target.read_text(encoding="utf-8")
        state = "new" if before is None else ("unchanged" if before == after else "updated")
        click.echo(f"{state:<9} {target} ({len(result.kcis)} KCIs)")
    if failed:
        sys.exit(1)

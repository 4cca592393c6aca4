"""The ``kci-engine`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from engine.demo import play, timeline
from engine.facade import Engine
from engine.kci import kci_json_schema


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kci-engine")
def main() -> None:
    """kci-engine: order lifecycles that keep the customer informed (Fibre Cafe KCIs)."""


@main.command()
@click.option("--indent", type=click.IntRange(0, 8), default=2, show_default=True)
def schema(indent: int) -> None:
    """Print the JSON Schema of the POST /kcis body the engine sends."""
    click.echo(json.dumps(kci_json_schema(), indent=indent or None, sort_keys=True))


@main.command()
@click.option(
    "--jsonl",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write every KCI body, exactly as POSTed, one JSON object a line.",
)
def demo(jsonl: Path | None) -> None:
    """Replay the built-in sample lifecycles and print each order's KCI timeline."""
    engine = Engine()
    played = list(play(engine))
    for one in played:
        timeline(one, click.echo)
    kcis = [kci for one in played for kci in one.kcis]
    reasons = sorted({kci.reason_code.value for kci in kcis})
    click.echo(
        f"\n{len(kcis)} KCIs for {len(played)} orders; {len(reasons)} of 18 reason codes sent."
    )
    if jsonl is not None:
        try:
            with jsonl.open("w", encoding="utf-8") as out:
                for kci in kcis:
                    out.write(kci.json() + "\n")
        except OSError as exc:
            raise click.ClickException(f"cannot write {jsonl}: {exc.strerror}") from None
        click.echo(f"KCI bodies written to {jsonl}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

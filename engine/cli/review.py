"""Read-only review commands: ``kci-engine chart`` and ``kci-engine schema``."""

from __future__ import annotations

import json

import click

from ..core.codes import OrderType
from ..orders import kci_json_schema


@click.command("chart")
@click.argument("order_type", type=click.Choice([t.value for t in OrderType]))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "svg", "matrix"]),
    default="mermaid",
    show_default=True,
    help="Mermaid text, Graphviz DOT, an SVG (needs Graphviz) or the reason-code matrix table.",
)
def chart(order_type: str, fmt: str) -> None:
    """Print ORDER_TYPE's statechart or reason-code matrix, as the running engine has it
    (read-only: nothing is written; redirect it where you want it)."""
    from ..tooling import diagrams

    kind = OrderType(order_type)
    if fmt == "mermaid":
        text = diagrams.mermaid(kind)
    elif fmt == "dot":
        text = diagrams.dot(kind)
    elif fmt == "svg":
        text = diagrams.render_svg(diagrams.dot(kind))
    else:
        text = diagrams.matrix_markdown(kind)
    click.echo(text, nl=False)


@click.command()
@click.option("--indent", type=click.IntRange(0, 8), default=2, show_default=True)
def schema(indent: int) -> None:
    """Print the JSON Schema of the POST /kcis body the engine sends."""
    click.echo(json.dumps(kci_json_schema(), indent=indent or None, sort_keys=True))

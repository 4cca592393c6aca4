"""The order document: the latest full version of an order, kept in wire form.

The engine keeps each order as the JSON-ready dict it sends (camelCase keys, no ``None`` values),
so building a KCI body never re-serialises the order. A whole order is validated against its
pydantic model once, when the engine first sees it; later changes are validated field by field,
which costs in proportion to what changed rather than to the size of the order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..errors import InvalidEventData, InvalidOrder

if TYPE_CHECKING:
    from .spec import OrderTypeSpec

#: Fields the engine owns: an event may not set them through its order changes.
ENGINE_OWNED = frozenset(
    {
        "status",
        "serviceOrderAmendmentId",
        "serviceOrderAmendmentReference",
        "serviceOrderCancellationId",
        "serviceOrderCancellationReference",
    }
)
#: Fields that identify the order and never change once set.
IMMUTABLE = frozenset({"id", "tenant", "supplierOrderReference"})


@dataclass(frozen=True, slots=True)
class _Field:
    """A field's pydantic_core validation and serialisation, called without the Python
    wrappers of its ``TypeAdapter`` (they cost as much again as the work, on every changed field
    of every event)."""

    validate: Callable[..., Any]  # TypeAdapter.validator.validate_python
    dump: Callable[..., Any]  # TypeAdapter.serializer.to_python
    required: bool


@cache
def _field_table(model: type[BaseModel]) -> dict[str, _Field]:
    table: dict[str, _Field] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        annotation: Any = info.annotation
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        table[alias] = _Field(
            adapter.validator.validate_python, adapter.serializer.to_python, info.is_required()
        )
    return table


def _errors(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def validate_order(spec: OrderTypeSpec, order: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """Validate a whole order and return its canonical wire form.

    Raises:
        InvalidOrder: naming every field that is wrong.
    """
    order_type, model = spec.order_type, spec.order_model
    try:
        if isinstance(order, BaseModel):
            order = order.model_dump(by_alias=True, exclude_none=True)
        validated = model.model_validate(order)
    except ValidationError as exc:
        raise InvalidOrder(f"invalid {order_type} order: {_errors(exc, '')}") from None
    return validated.model_dump(mode="json", by_alias=True, exclude_none=True)


def apply_changes(
    spec: OrderTypeSpec,
    document: Mapping[str, Any],
    changes: Mapping[str, Any] | None,
    characteristics: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Return a new document with ``changes`` applied; ``document`` is left as it was.

    ``changes`` follows the gateway's amendment convention: each named top-level field is
    replaced whole (arrays too) and ``None`` removes it. ``characteristics`` sets (or, with
    ``None``, removes) service characteristics by name, wherever the order type keeps them.

    Raises:
        InvalidEventData: a field is unknown, owned by the engine, immutable or malformed.
    """
    order_type, fields = spec.order_type, _field_table(spec.order_model)
    new = dict(document)
    for key, value in (changes or {}).items():
        field = fields.get(key)
        if field is None:
            raise InvalidEventData(f"order.{key}: not a field of a {order_type} order")
        if key in ENGINE_OWNED:
            raise InvalidEventData(f"order.{key}: set by the engine, not by event data")
        if key in IMMUTABLE and key in document and document[key] != value:
            raise InvalidEventData(f"order.{key}: identifies the order and cannot change")
        if value is None:
            if field.required:
                raise InvalidEventData(f"order.{key}: required on a {order_type} order")
            new.pop(key, None)
            continue
        try:
            parsed = field.validate(value)
        except ValidationError as exc:
            raise InvalidEventData(_errors(exc, f"order.{key}")) from None
        new[key] = field.dump(parsed, mode="json", by_alias=True, exclude_none=True)
    if characteristics:
        new = _set_characteristics(spec, new, characteristics)
    if new.get("id") is None and new.get("supplierOrderReference") is None:
        raise InvalidEventData("order.id: the order needs its id and/or supplierOrderReference")
    return new


def _set_characteristics(
    spec: OrderTypeSpec, document: dict[str, Any], values: Mapping[str, str | None]
) -> dict[str, Any]:
    if spec.characteristics is None:
        raise InvalidEventData(
            f"service_characteristics: a {spec.order_type} order carries no service characteristics"
        )
    return spec.with_characteristics(document, _merge(spec.characteristic_items(document), values))


def _merge(
    current: list[dict[str, Any]] | None, values: Mapping[str, str | None]
) -> list[dict[str, Any]]:
    merged = {item["name"]: item["value"] for item in current or ()}
    for name, value in values.items():
        if not name:
            raise InvalidEventData("service_characteristics: a characteristic needs a name")
        if value is None:
            merged.pop(name, None)
        elif not isinstance(value, str):
            raise InvalidEventData(
                f"service_characteristics.{name}: values are strings, got {type(value).__name__}"
            )
        else:
            merged[name] = value
    return [{"name": name, "value": value} for name, value in merged.items()]

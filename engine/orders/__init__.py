"""The four order types, one spec each, and what reads across all of them: the union of KCI
bodies, :func:`parse_kci` and the JSON Schema of ``POST /kcis``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Discriminator, Tag, TypeAdapter

from ..core.codes import OrderType
from ..core.spec import OrderTypeSpec
from ..core.wire import KciBody
from . import cease, modify, provide, unsolicited_cease

SPECS: Mapping[OrderType, OrderTypeSpec] = {
    OrderType.PROVIDE: provide.SPEC,
    OrderType.CEASE: cease.SPEC,
    OrderType.MODIFY: modify.SPEC,
    OrderType.UNSOLICITED_CEASE: unsolicited_cease.SPEC,
}

_TAGS: dict[str, str] = {}
for _spec in SPECS.values():
    _TAGS[_spec.kci_property] = _spec.order_type.value
    _TAGS[_spec.kci_model.order_field] = _spec.order_type.value


def _which_order(value: Any) -> str | None:
    """The discriminator: which order property the body carries."""
    if isinstance(value, dict):
        keys = value.keys()
    elif isinstance(value, BaseModel):
        keys = type(value).model_fields.keys()
    else:
        return None  # not an object: pydantic reports it as such
    return next((tag for key in keys if (tag := _TAGS.get(key)) is not None), None)


AnyKci = Annotated[
    Annotated[provide.SPEC.kci_model, Tag(OrderType.PROVIDE.value)]  # type: ignore[name-defined]
    | Annotated[cease.SPEC.kci_model, Tag(OrderType.CEASE.value)]  # type: ignore[name-defined]
    | Annotated[modify.SPEC.kci_model, Tag(OrderType.MODIFY.value)]  # type: ignore[name-defined]
    | Annotated[
        unsolicited_cease.SPEC.kci_model,  # type: ignore[name-defined]
        Tag(OrderType.UNSOLICITED_CEASE.value),
    ],
    Discriminator(
        _which_order,
        custom_error_type="kci_order_missing",
        custom_error_message="the body carries none of "
        + ", ".join(spec.kci_property for spec in SPECS.values()),
    ),
]

KCI_ADAPTER: TypeAdapter[KciBody] = TypeAdapter(AnyKci)


def parse_kci(data: bytes | str | dict[str, Any]) -> KciBody:
    """Validate a KCI body (JSON text or a decoded object) against every one-body rule of the
    contract.

    Raises:
        pydantic.ValidationError: naming each field that is wrong.
    """
    if isinstance(data, bytes | str):
        return KCI_ADAPTER.validate_json(data)
    return KCI_ADAPTER.validate_python(data)


def kci_json_schema() -> dict[str, Any]:
    """The JSON Schema of the ``POST /kcis`` body as the engine sends it."""
    schema = KCI_ADAPTER.json_schema(mode="serialization", by_alias=True)
    schema["title"] = "Fibre Cafe Supplier Updates API: POST /kcis body (as sent by kci-engine)"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def spec_of(order_type: OrderType) -> OrderTypeSpec:
    """The spec of ``order_type``."""
    return SPECS[order_type]


__all__ = ["AnyKci", "KCI_ADAPTER", "SPECS", "kci_json_schema", "parse_kci", "spec_of"]

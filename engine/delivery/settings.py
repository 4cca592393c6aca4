"""Delivery settings: from environment variables (``KCI_*``) and/or a TOML file.

Environment variables win over the file. Every setting is validated when it is read; a missing or
malformed one is a :class:`~engine.errors.ConfigurationError` that names it. The client secret is
a ``SecretStr``: it never appears in a repr, a log line or an error message.

| setting | env | default |
|---|---|---|
| database URL | ``KCI_ENGINE_DB`` | ``sqlite:///kci-engine.db`` |
| gateway base URL | ``KCI_GATEWAY_URL`` | (required) e.g. ``https://cvt.fibregateway.com/v1`` |
| OAuth client id / secret | ``KCI_CLIENT_ID`` / ``KCI_CLIENT_SECRET`` | (required) |
| OAuth scope | ``KCI_SCOPE`` | none |
| token in form body or Basic | ``KCI_TOKEN_AUTH`` | ``form`` (or ``basic``) |
| total time for one request or token fetch, seconds | ``KCI_TIMEOUT_S`` | 10 (0 < t <= 300) |
| orders delivered in parallel | ``KCI_CONCURRENCY`` | 128 (1 to 4096) |
| first retry delay, seconds | ``KCI_RETRY_BASE_S`` | 1 (<= 3600) |
| longest retry delay, seconds | ``KCI_RETRY_CAP_S`` | 300 (<= 86400, >= the first) |
| retry horizon, seconds | ``KCI_RETRY_HORIZON_S`` | 86400 (then dead-lettered; <= 30 days) |
| idle poll interval, seconds | ``KCI_POLL_S`` | 0.5 (<= 60) |
| order lease, seconds | ``KCI_LEASE_S`` | 30 (more than twice the timeout; <= 3600) |
| this dispatcher's stable name | ``KCI_WORKER_ID`` | host:pid:random (give the pod or host name) |
| verify TLS | ``KCI_VERIFY_TLS`` | true |
| seconds between the jeopardy and owed scans | ``KCI_METRICS_SCAN_S`` | 60 (0: off; 1 to 86400) |
| the jeopardy gauges on ``/metrics`` | ``KCI_METRICS_JEOPARDY`` | true |
| the rules (TOML) the jeopardy gauges count with | ``KCI_JEOPARDY_RULES`` | the defaults |

Every number must be finite and inside its range (``inf``, ``nan`` and ``1e308`` are refused with
the setting's name). The database URL's password is masked in the settings' repr, str and JSON.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ..errors import ConfigurationError


class DeliverySettings(BaseSettings):
    """Everything the dispatcher needs to reach the gateway."""

    model_config = SettingsConfigDict(env_prefix="KCI_", extra="forbid", frozen=True)

    engine_db: str = "sqlite:///kci-engine.db"
    gateway_url: str
    client_id: str = Field(min_length=1, max_length=200)
    client_secret: SecretStr
    scope: str | None = Field(default=None, max_length=1000)
    token_auth: Literal["form", "basic"] = "form"
    timeout_s: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)
    concurrency: int = Field(default=128, ge=1, le=4096)
    retry_base_s: float = Field(default=1.0, gt=0, le=3600, allow_inf_nan=False)
    retry_cap_s: float = Field(default=300.0, gt=0, le=86_400, allow_inf_nan=False)
    retry_horizon_s: float = Field(default=86_400.0, gt=0, le=30 * 86_400, allow_inf_nan=False)
    poll_s: float = Field(default=0.5, ge=0.001, le=60, allow_inf_nan=False)
    lease_s: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    worker_id: str | None = Field(default=None, min_length=1, max_length=200)
    verify_tls: bool = True
    metrics_scan_s: float = Field(default=60.0, ge=0, le=86_400, allow_inf_nan=False)
    metrics_jeopardy: bool = True
    jeopardy_rules: Path | None = None

    @field_validator("client_secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @field_validator("gateway_url")
    @classmethod
    def _gateway_url(cls, value: str) -> str:
        from .client import check_base_url

        try:
            check_base_url(value)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("worker_id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("must be printable text (no control characters)")
        return value

    @field_validator("metrics_scan_s")
    @classmethod
    def _off_or_a_second(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("must be 0 (no scans) or at least 1 second")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeliverySettings:
        if self.retry_cap_s < self.retry_base_s:
            raise ValueError(
                f"KCI_RETRY_CAP_S ({self.retry_cap_s:g}) must not be below "
                f"KCI_RETRY_BASE_S ({self.retry_base_s:g})"
            )
        if self.lease_s <= 2 * self.timeout_s:
            raise ValueError(
                f"KCI_LEASE_S ({self.lease_s:g}) must be more than twice KCI_TIMEOUT_S "
                f"({self.timeout_s:g}), so a lease outlasts every request sent under it"
            )
        return self

    @field_serializer("engine_db")
    def _hide_password(self, value: str) -> str:
        return masked_url(value)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, masked_url(value) if name == "engine_db" else value


_USERINFO = re.compile(r"(//[^/:@]*:)[^/@]*@")


def masked_url(url: str) -> str:
    """A database URL with its password replaced by ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return _USERINFO.sub(r"\1***@", url)


def load_settings(config_file: Path | None = None, **overrides: Any) -> DeliverySettings:
    """Read the settings: ``overrides`` (e.g. command-line options), then ``KCI_*`` environment
    variables, then ``config_file`` (TOML, keys as in the table above without ``KCI_``, lower
    case), then the defaults.

    Raises:
        ConfigurationError: naming every missing or malformed setting (never a secret's value).
    """
    from_file: dict[str, Any] = {}
    if config_file is not None:
        try:
            from_file = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {config_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigurationError(f"{config_file} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{config_file} is not valid TOML: {exc}") from None
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        # Environment variables override the file: pass the file as init-time defaults.
        return _with_file_defaults(from_file)(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            name = ".".join(str(p) for p in err["loc"])
            if not name:  # a rule across settings: its message names them
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            problems.append(f"KCI_{name.upper()} ({name}): {err['msg']}")
        where = f" (from the environment and {config_file})" if config_file else ""
        raise ConfigurationError(
            "invalid delivery settings" + where + ": " + "; ".join(problems)
        ) from None


def _with_file_defaults(values: dict[str, Any]) -> type[DeliverySettings]:
    """``DeliverySettings`` with ``values`` as the lowest-priority source (below the env)."""
    if not values:
        return DeliverySettings

    class FromFile(DeliverySettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, values))

    return FromFile

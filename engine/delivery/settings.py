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
| request timeout, seconds | ``KCI_TIMEOUT_S`` | 10 |
| orders delivered in parallel | ``KCI_CONCURRENCY`` | 8 |
| first retry delay / cap, seconds | ``KCI_RETRY_BASE_S`` / ``KCI_RETRY_CAP_S`` | 1 / 300 |
| retry horizon, seconds | ``KCI_RETRY_HORIZON_S`` | 86400 (then dead-lettered) |
| idle poll interval, seconds | ``KCI_POLL_S`` | 0.5 |
| verify TLS | ``KCI_VERIFY_TLS`` | true |
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
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
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    scope: str | None = None
    token_auth: Literal["form", "basic"] = "form"
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    concurrency: int = Field(default=8, ge=1, le=256)
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_cap_s: float = Field(default=300.0, gt=0)
    retry_horizon_s: float = Field(default=86_400.0, gt=0)
    poll_s: float = Field(default=0.5, gt=0, le=60)
    verify_tls: bool = True

    @field_validator("client_secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value


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
            name = ".".join(str(p) for p in err["loc"]) or "settings"
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

"""Who may call the Supplier API: the gateway, authenticated as the docs allow.

The docs let a supplier choose OAuth2 (client credentials, recommended), Basic or mutual TLS.
An :class:`Authenticator` looks at a request's headers and says yes or no; the built-in ones
check HTTP Basic credentials and bearer tokens from settings (tokens a supplier's OAuth2 server
issued and shares, or static ones), compared in constant time. Mutual TLS is the TLS
terminator's job (uvicorn's ``--ssl-ca-certs`` or a proxy), in front of the app. No
authentication at all is allowed only when the server listens on loopback and it is asked for
(``allow_anonymous``). Secrets never appear in a repr, a log line or an error.

Settings (environment): ``KCI_SERVE_BASIC_USER`` and ``KCI_SERVE_BASIC_PASSWORD`` accept those
Basic credentials; ``KCI_SERVE_BEARER_TOKENS`` accepts those bearer tokens (comma-separated).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..errors import ConfigurationError


class Authenticator(Protocol):
    """Whether a request's headers (lower-case names) carry credentials this server accepts."""

    def __call__(self, headers: Mapping[str, str]) -> bool: ...


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class BasicAuth:
    """HTTP Basic with one user and password."""

    def __init__(self, user: str, password: str | SecretStr) -> None:
        secret = password if isinstance(password, SecretStr) else SecretStr(password)
        if not user or not secret.get_secret_value() or ":" in user:
            raise ConfigurationError("Basic auth needs a user (without ':') and a password")
        self._user = user
        self._password = secret

    def __repr__(self) -> str:
        return f"BasicAuth(user={self._user!r}, password='**********')"

    def __call__(self, headers: Mapping[str, str]) -> bool:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        # Both compared, whatever the first gives: the time taken says nothing.
        good_user = _equal(user, self._user)
        good_password = _equal(password, self._password.get_secret_value())
        return bool(sep) and good_user and good_password


class BearerTokens:
    """``Authorization: Bearer <token>`` with one of the given tokens."""

    def __init__(self, tokens: Iterable[str | SecretStr]) -> None:
        self._tokens = tuple(t if isinstance(t, SecretStr) else SecretStr(t) for t in tokens)
        if not self._tokens or not all(t.get_secret_value() for t in self._tokens):
            raise ConfigurationError("bearer auth needs at least one token, none empty")

    def __repr__(self) -> str:
        return f"BearerTokens({len(self._tokens)} token(s))"

    def __call__(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        found = False
        for expected in self._tokens:  # every one compared: the time says nothing
            found |= _equal(token, expected.get_secret_value())
        return found


class AnyOf:
    """Accepts what any of its authenticators accepts."""

    def __init__(self, *authenticators: Authenticator) -> None:
        if not authenticators:
            raise ConfigurationError("AnyOf needs at least one authenticator")
        self.authenticators = authenticators

    def __repr__(self) -> str:
        return f"AnyOf{self.authenticators!r}"

    def __call__(self, headers: Mapping[str, str]) -> bool:
        return any(check(headers) for check in self.authenticators)


class ServeSettings(BaseSettings):
    """The Supplier API's credentials, from ``KCI_SERVE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="KCI_SERVE_", extra="ignore", frozen=True)

    basic_user: str | None = None
    basic_password: SecretStr | None = None
    bearer_tokens: SecretStr | None = None

    def authenticator(self) -> Authenticator | None:
        """The authenticator the settings describe, or ``None`` if they name no credentials.

        Raises:
            ConfigurationError: a Basic user without a password, or the other way round.
        """
        found: list[Authenticator] = []
        if (self.basic_user is None) != (self.basic_password is None):
            raise ConfigurationError(
                "KCI_SERVE_BASIC_USER and KCI_SERVE_BASIC_PASSWORD go together"
            )
        if self.basic_user is not None and self.basic_password is not None:
            found.append(BasicAuth(self.basic_user, self.basic_password))
        if self.bearer_tokens is not None:
            tokens = [t.strip() for t in self.bearer_tokens.get_secret_value().split(",")]
            found.append(BearerTokens([t for t in tokens if t]))
        if not found:
            return None
        return found[0] if len(found) == 1 else AnyOf(*found)


def load_serve_settings() -> ServeSettings:
    """The settings from the environment.

    Raises:
        ConfigurationError: naming a malformed setting (never its value).
    """
    try:
        return ServeSettings()
    except ValidationError as exc:
        names: Sequence[str] = [".".join(str(p) for p in e["loc"]) for e in exc.errors()]
        raise ConfigurationError(f"malformed settings: {', '.join(names)}") from None

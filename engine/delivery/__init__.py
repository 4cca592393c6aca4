"""Delivery of the outbox to the Fibre Cafe Supplier Updates API.

:class:`GatewayClient` is the transport (one KCI, one classified answer); :class:`Dispatcher`
is the policy (order per order, retries, dead letters, leases); :func:`load_settings` reads the
configuration. See docs/delivery.md.
"""

from ..errors import CredentialsRejected
from .client import Attempt, GatewayClient, Outcome
from .dispatcher import Dispatcher, DispatchStats
from .policy import RetryPolicy
from .settings import DeliverySettings, load_settings

__all__ = [
    "Attempt",
    "CredentialsRejected",
    "DeliverySettings",
    "DispatchStats",
    "Dispatcher",
    "GatewayClient",
    "Outcome",
    "RetryPolicy",
    "load_settings",
]

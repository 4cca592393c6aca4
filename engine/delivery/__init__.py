"""Delivery of the outbox to the Fibre Cafe Supplier Updates API.

:class:`GatewayClient` is the transport (one KCI, one classified answer); :class:`Dispatcher`
is the policy (order per order, retries, dead letters, leases); :func:`load_settings` reads the
configuration. See docs/delivery.md.
"""

from engine.delivery.client import Attempt, CredentialsRejected, GatewayClient, Outcome
from engine.delivery.dispatcher import Dispatcher, DispatchStats
from engine.delivery.policy import RetryPolicy
from engine.delivery.settings import DeliverySettings, load_settings

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

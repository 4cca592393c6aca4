"""The fact sheet's lists, copied independently of engine/: what the tables are checked against."""

from __future__ import annotations

#: The fact sheet's §3 list, spelled as on the wire.
REASON_CODES = [
    "CREATED",
    "ACKNOWLEDGED",
    "COMMITTED",
    "UPDATE",
    "ADDITIONAL",
    "WARNING",
    "DELAY",
    "RESUMED",
    "INFORMATION_REQUIRED",
    "REAPPOINT",
    "REAPPOINTED",
    "RESUBMIT",
    "AMENDED",
    "AMENDMENT_REJECTED",
    "CANCELLED",
    "CANCELLATION_REJECTED",
    "ORDER_REJECTED",
    "COMPLETED",
]

#: The fact sheet's §4 matrix, copied independently of engine/codes.py: Cancel, Delay, Inform,
#: Reappoint. ``None`` marks the rows whose matrix was not visible.
MATRIX: dict[str, str | None] = {
    "ACCESS_ISSUE": "CD-R",
    "ACTIVATION_FAILED": "CD-R",
    "ADDITIONAL_WORK": "CD-R",
    "APPOINTMENT_NOT_REQUIRED": "--I-",
    "CAPACITY_ISSUE": "C---",
    "COST_ISSUE": "C-I-",
    "CUSTOMER_CHANGED_MIND": "C--R",
    "FAULT_AT_NODE": "CDIR",
    "FAULT_AT_ONT": "CDIR",
    "FAULT_AT_POP": "CDIR",
    "INFORMATION_REQUIRED": "-DI-",
    "INSTALL_FAILED": "CD-R",
    "INVALID_REQUEST": "CD-R",
    "LINKED_ORDER_ISSUE": "CD-R",
    "NETWORK_ISSUE": "CDIR",
    "NETWORK_UNAVAILABLE": None,
    "NO_LONGER_REQUIRED": None,
    "OTHER": None,
    "PLANNING_ISSUE": None,
    "PROPERTY_UNOCCUPIED": None,
    "ROUTER_NOT_AVAILABLE": None,
    "SITE_UNSAFE": None,
    "SUPPLIER_FAULT": None,
    "SURVEY_REQUIRED": None,
    "TIMED_OUT": None,
    "UNABLE_TO_ATTEND": None,
    "UNKNOWN_FAULT": None,
    "WAYLEAVE_ISSUE": None,
}

#: The KCI reason code that stands for each column of the matrix.
COLUMN_REASON = {0: "CANCELLED", 1: "DELAY", 2: "INFORMATION_REQUIRED", 3: "REAPPOINT"}

"""Looking back over the stored orders: history replay, jeopardy and reconciliation.

Everything here reads the database (a read-only store is enough) a page of orders at a time,
and runs the order types' machines in memory: nothing is written.
"""

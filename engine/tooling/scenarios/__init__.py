"""Scenario files: whole lifecycles written down, replayed on a fresh engine and compared.

See docs/scenarios.md for the file format, the ``kci-engine replay`` and ``record`` commands,
golden transcripts, generated lifecycles and transition coverage.
"""

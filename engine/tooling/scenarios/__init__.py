"""Scenario files: whole lifecycles written down, replayed on a fresh engine and compared.

See docs/scenarios.md for the file format, the ``kci-engine replay`` and ``record`` commands,
golden transcripts, generated lifecycles and transition coverage.
"""

#: File names the loader, the ``replay`` command and the pytest plugin treat as scenarios.
SUFFIXES = (".kci.yaml", ".kci.yml")
#: Golden transcripts live next to their scenarios and end so.
TRANSCRIPT_SUFFIX = ".transcript.json"

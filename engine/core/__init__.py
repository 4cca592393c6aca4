"""The domain core: the wire vocabulary, the contract tables, the wire models, events and
records, the chart language and what firing a step does. No I/O: stores and delivery are
adapters beside it (docs/architecture.md)."""

"""Review and test tooling, apart from the engine: statecharts and generated docs, scenario files
and their replay, the sandbox gateway, the demo, helpers for tests and the pytest plugin."""

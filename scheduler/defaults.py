"""The scheduler's tunables, importable without loading the service (the CLI shows them)."""

DEFAULT_TICK = 1.0  # longest sleep between passes, seconds
DEFAULT_GRACE = 10.0  # seconds a slot may be late and still count as on time

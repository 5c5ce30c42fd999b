"""The container suite (tests/container/test_*.py, needs a Docker engine) and the static checks (checks.py)."""

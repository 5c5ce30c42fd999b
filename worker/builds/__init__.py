"""Envs the worker builds from requirements: the cache they live in (``cache.py``) and the installer
that builds them (``installer.py``). The environment kind that uses both is
``environments/built.py``."""

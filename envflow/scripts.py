"""envflow's Lua scripts, loaded once per client with the shared helpers prepended."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from redis import Redis
from redis.commands.core import Script

SCRIPT_NAMES = ("claim", "heartbeat", "append", "finish", "crash", "cancel")


@cache
def _source(name: str) -> str:
    folder = files("envflow").joinpath("lua")
    return folder.joinpath("_lib.lua").read_text() + "\n" + folder.joinpath(f"{name}.lua").read_text()


class Scripts:
    """The registered scripts of one Redis client; each is callable as ``script(keys, args, client=pipe)``."""

    def __init__(self, redis: Redis) -> None:
        for name in SCRIPT_NAMES:
            setattr(self, name, redis.register_script(_source(name)))

    claim: Script
    heartbeat: Script
    append: Script
    finish: Script
    crash: Script
    cancel: Script

"""envflow's Lua scripts, loaded once per client with the shared helpers prepended."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError

SCRIPT_NAMES = ("claim", "heartbeat", "append", "finish", "crash", "cancel")


@cache
def _source(name: str) -> str:
    folder = files("envflow").joinpath("lua")
    return folder.joinpath("_lib.lua").read_text() + "\n" + folder.joinpath(f"{name}.lua").read_text()


class Scripts:
    """The registered scripts of one Redis client; each is callable as ``script(keys, args, client=pipe)``.

    In a pipeline, redis-py asks the server whether the scripts exist before every
    execute (one more round trip); :meth:`queue` adds a plain EVALSHA instead, and
    :meth:`rerun_if_missing` runs a script again on its own when the server had lost it
    (a restarted Redis forgets loaded scripts).
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        for name in SCRIPT_NAMES:
            setattr(self, name, redis.register_script(_source(name)))

    def queue(self, pipe: Pipeline, script: Script, keys: list[str], args: list[object]) -> None:
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    def rerun_if_missing(self, result: object, script: Script, keys: list[str], args: list[object]) -> object:
        """``result`` of a queued script, or the script's own result when the server did not have it."""
        if isinstance(result, NoScriptError):
            return script(keys=keys, args=args)
        if isinstance(result, Exception):
            raise result
        return result

    claim: Script
    heartbeat: Script
    append: Script
    finish: Script
    crash: Script
    cancel: Script

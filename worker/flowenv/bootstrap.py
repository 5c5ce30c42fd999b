"""Runs flows inside their target environment. Stdlib-only, CPython 3.8+.

The worker starts ``<env python> -u -c STUB MODE ... SOURCE_FD``; STUB runs this file's source,
read from a sealed in-memory file (SOURCE_FD), so nothing a flow writes decides what later runs do.

``run CONTROL_FD RESULT_FD NONCE_FD``: one run. NONCE_FD holds a secret the worker made for this
process alone; CONTROL_FD brings a setup message (the sandbox to enter, envflow's ``flows.py``
source, the deployment's variables, the modules to preload; a process started ahead imports them
while it waits), then the run; each a length line and a marshal carrying the nonce (any other
message is refused). Its EOF (the worker died) makes a watchdog kill the process group. The
outcome goes to RESULT_FD as JSON; stdout and stderr belong to the flow.

``serve SOCKET_FD``: a ready parent of a warm pool (``forkserver.py``, handed over with this file).

Only built-in modules are imported up front: every cold run pays for each import here.
Exit codes: 0 the flow returned, 1 the flow raised, 3 the flow could not be loaded.
"""

import _signal
import _thread
import marshal
import os
import sys

EXIT_RAISED = 1
EXIT_LOAD_ERROR = 3
NONCE_SIZE = 16


def read_exactly(fd, size):
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the worker went away before sending the run")
        data += chunk
    return data


class Refused(ValueError):
    """A control message that did not come from the worker."""


def read_message(fd, nonce):
    header = b""
    while not header.endswith(b"\n"):
        header += read_exactly(fd, 1)
    return checked(marshal.loads(read_exactly(fd, int(header))), nonce)


def checked(message, nonce):
    """``message`` if it carries this process's nonce (only the worker has it), else Refused."""
    if type(message) is not dict or message.get("nonce") != nonce:
        raise Refused("a message on the run's control pipe did not come from the worker (another process "
                      "wrote to it); refused, the flow was not run")
    return message


def start_watchdog(control_fd, nonce):
    """A thread that reads the run from the control pipe and hands it over (``receive``), then waits
    for the worker's end to close and kills the process group (this flow and all it started).
    Started before the run comes, it costs the run nothing. `_thread` is built in: no import cost."""
    arrived = _thread.allocate_lock()
    arrived.acquire()
    box = []

    def watch():
        try:
            box.append(read_message(control_fd, nonce))
        except (EOFError, ValueError, OSError) as e:
            box.append(e)
        arrived.release()
        try:
            while os.read(control_fd, 4096):
                pass
        except OSError:
            pass
        os.killpg(0, _signal.SIGKILL)

    _thread.start_new_thread(watch, ())

    def receive():
        arrived.acquire()
        return box[0]

    return receive


def on_sigterm(signum, frame):
    # Unwind the flow (finally blocks, context managers) when the worker stops the run.
    raise SystemExit(128 + signum)


class StoredSource(object):
    """The loader of a module run from a source held in memory: tracebacks show its lines (linecache
    asks ``get_source``) though no file of that name exists here."""

    def __init__(self, source):
        self.source = source

    def get_source(self, name):
        return self.source if isinstance(self.source, str) else self.source.decode("utf-8", "replace")


SHOWN_SOURCES = {}  # file name -> the source it ran from, for the tracebacks this file prints


def exec_source(name, path, source=None, package=None):
    """Run ``source`` (read from ``path`` when not given) as module ``name``, registered in sys.modules;
    its code and tracebacks name ``path``."""
    if source is None:
        with open(path, "rb") as f:
            source = f.read()
    else:
        SHOWN_SOURCES[path] = source
    module = type(sys)(name)
    module.__file__ = path
    module.__loader__ = StoredSource(source)
    if package is not None:
        module.__package__ = package
    sys.modules[name] = module
    exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
    return module


def _installed(name):
    """Whether site-packages has anything of package ``name`` (a cheap look before a real import:
    a failed import lists every directory on sys.path, which costs the run milliseconds)."""
    for entry in sys.path:
        if entry.endswith(("site-packages", "dist-packages")):
            try:
                if any(n == name or n.startswith((name + "-", name + ".", "__editable__." + name))
                       for n in os.listdir(entry)):
                    return True
            except OSError:
                pass
    return False


def install_envflow_shim(flows_path, flows_source):
    """Make `from envflow import flow` work in an environment without envflow.

    An envflow installed in the environment wins; otherwise envflow's stdlib-only
    flows.py is loaded by path (the worker's site-packages never join sys.path).
    """
    if _installed("envflow"):
        try:
            import envflow.flows

            return envflow.flows
        except ImportError:
            pass
    package = type(sys)("envflow")
    package.__path__ = []
    package.__file__ = None
    package.__doc__ = "envflow stand-in for flow environments without envflow installed"
    sys.modules["envflow"] = package
    flows = exec_source("envflow.flows", flows_path, flows_source, package="envflow")
    package.flow, package.Flow, package.flows = flows.flow, flows.Flow, flows

    class _Inert(object):
        """Deployment objects do nothing inside a run."""

        def __init__(self, *args, **kwargs):
            pass

    for sub, names in (
        ("deployments", ("Deployment", "DeploymentSpec")),
        ("flow_runners", ("SubprocessFlowRunner",)),
        ("schedules", ("Cron", "Interval")),
    ):
        module = type(sys)("envflow." + sub)
        for name in names:
            setattr(module, name, _Inert)
            setattr(package, name, _Inert)
        sys.modules[module.__name__] = module
        setattr(package, sub, module)
    return flows


def load_flow(spec, flows):
    """The flow the run names, from its file (the source given with the run, or the file at its path)."""
    path = spec.get("flow_path") or spec["flow_file"]  # the name the user gave it: tracebacks show it
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else "__envflow_flow__"
    loading = getattr(flows, "loading", None)
    source = spec.get("flow_source")  # None: the flow is stored as a path, read it there
    if source is None:
        path = spec["flow_file"]
    if loading is not None:
        with loading():
            module = exec_source(name, path, source)
    else:
        module = exec_source(name, path, source)
    is_flow = getattr(flows, "is_flow", lambda obj: getattr(obj, "__envflow_flow__", False) is True)
    wanted = spec["flow_name"]
    found = []
    for value in list(vars(module).values()):
        if is_flow(value) and all(value is not f for f in found):
            found.append(value)
    for candidate in found:
        if candidate.name == wanted or getattr(candidate.fn, "__name__", None) == wanted:
            return candidate
    names = ", ".join(f.name for f in found) or "none"
    raise LookupError("{} defines no flow named {!r} (flows found: {})".format(path, wanted, names))


_ESCAPES = {i: "\\u{:04x}".format(i) for i in range(32)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def to_json(value):
    """JSON text of plain data, without importing json (which pulls in re and enum).

    Anything but None, bools, ints, finite floats, str, lists, tuples and str-keyed
    dicts goes through the json module, which also reports what is not serialisable.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and value - value == 0:
        return float.__repr__(value)
    if kind is str:
        return '"' + value.translate(_ESCAPES) + '"'
    if kind is list or kind is tuple:
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if kind is dict and all(type(k) is str for k in value):
        return "{" + ",".join(to_json(k) + ":" + to_json(v) for k, v in value.items()) + "}"
    import json

    return json.dumps(value)


def print_user_traceback(error):
    """Print a traceback without the frames of this file, with the lines of sources run from memory."""
    import linecache
    import traceback

    for path, source in SHOWN_SOURCES.items():
        text = source if isinstance(source, str) else source.decode("utf-8", "replace")
        linecache.cache[path] = (len(text), None, text.splitlines(True), path)  # no mtime: never re-read
    tb = error.__traceback__
    here = print_user_traceback.__code__.co_filename
    while tb is not None and tb.tb_frame.f_code.co_filename == here:
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb)


def write_result(fd, outcome):
    data = to_json(outcome).encode("utf-8")
    while data:
        data = data[os.write(fd, data):]
    os.close(fd)


SETUP_FAILED = []  # what did not import in setup: each run imports it again, and fails with it
HIDDEN = []  # set_dumpable(0) was called: the run's own process shows itself again
RULESET = []  # the sandbox's Landlock ruleset, kept by a ready parent: each forked run enters its own domain


def setup(message):
    """Enter the sandbox, install envflow's stand-in, take the deployment's variables and import the
    preloads (a failure waits for the run to report it)."""
    if message.get("sandbox"):
        set_dumpable(0)  # until its run comes: what it is handed is not for other processes of this uid
        HIDDEN.append(True)
    ruleset = confine(message.get("sandbox"))  # before any code of the env's or the flow's runs
    if ruleset is not None:
        RULESET.append(ruleset)
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # `-c` put the worker's directory first; the flow's own goes there later
    os.environ.update(message.get("environ") or {})  # the deployment's variables: never in /proc/<pid>/environ
    for name in ("envflow.flows", *(message.get("preload") or ())):
        try:
            if name == "envflow.flows":
                install_envflow_shim(message["flows_path"], message["flows_source"])
            else:
                __import__(name)
        except BaseException:  # noqa: B902 - reported by each run that needs it
            SETUP_FAILED.append(name)


def refuse(result_fd, error):
    sys.stderr.write("envflow bootstrap: {}\n".format(error))
    if isinstance(error, Refused):
        write_result(result_fd, {"ok": False, "stage": "load", "error_type": "ControlRefused", "error": str(error)})
    return EXIT_LOAD_ERROR


def run(control_fd, result_fd, nonce, forked=False):
    """One run, the setup done: read the run, load the flow, call it, report the outcome."""
    for fd in (control_fd, result_fd):
        os.set_inheritable(fd, False)  # the flow's own child processes must not hold them
    receive = start_watchdog(control_fd, nonce)
    _signal.signal(_signal.SIGTERM, on_sigterm)
    if forked:
        rehearse()
    spec = receive()
    if isinstance(spec, Exception):
        return refuse(result_fd, spec)
    if HIDDEN or forked:
        set_dumpable(1)  # the run's process is the flow's own (it reads its /proc/self, as any process does)

    # The flow sees itself as a script: its directory first on sys.path (for a stored source, the
    # directory the user knows it in, when the worker has it; never the worker's cache of it).
    if spec.get("path0"):
        sys.path.insert(0, spec["path0"])
    sys.argv = [spec.get("flow_path") or spec["flow_file"]]
    # Per-run variables arrive with the run: the interpreter was started, or forked, before it.
    os.environ.update(spec.get("environ") or {})

    try:
        for name in SETUP_FAILED:
            __import__(name)  # raises again, with its traceback, for this run
        flow = load_flow(spec, sys.modules["envflow.flows"])
    except BaseException as e:  # noqa: B902 - report any load failure, SystemExit included
        print_user_traceback(e)
        write_result(result_fd, {"ok": False, "stage": "load", "error_type": type(e).__name__, "error": str(e)})
        return EXIT_LOAD_ERROR
    return call_flow(flow, spec, result_fd)


def call_flow(flow, spec, result_fd):
    try:
        value = flow.fn(**spec["parameters"])
    except SystemExit as e:
        if e.code not in (None, 0):
            write_result(result_fd, {"ok": False, "stage": "run", "error_type": "SystemExit", "error": str(e.code)})
            return EXIT_RAISED
        value = None
    except BaseException as e:  # noqa: B902 - KeyboardInterrupt is a failure too
        print_user_traceback(e)
        write_result(result_fd, {"ok": False, "stage": "run", "error_type": type(e).__name__, "error": str(e)})
        return EXIT_RAISED

    try:
        text = to_json(value)
        outcome = '{"ok":true,"result":' + text + "}"
    except (TypeError, ValueError) as e:
        outcome = to_json({
            "ok": True,
            "result_error": "the flow returned a {} value, which is not JSON-serialisable ({}); "
            "return plain data (dict, list, str, numbers)".format(type(value).__name__, e),
        })
    data = outcome.encode("utf-8")
    while data:
        data = data[os.write(result_fd, data):]
    os.close(result_fd)
    return 0


def main():
    mode = sys.argv[1]
    if mode == "serve":
        try:
            return serve(int(sys.argv[2]))
        except Forked as child:  # the serving loop's frames are gone: run as a fresh process would
            pipes = child.args
        # Outside the handler: the flow's exceptions chain to nothing of ours, sys.exc_info() is empty.
        leave(run(*pipes, forked=True))
    control_fd, result_fd, nonce_fd = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    nonce = read_exactly(nonce_fd, NONCE_SIZE)
    os.close(nonce_fd)
    try:
        setup(read_message(control_fd, nonce))
    except (EOFError, ValueError) as e:
        return refuse(result_fd, e)
    return run(control_fd, result_fd, nonce)


if __name__ == "__main__":
    # A normal interpreter exit, as for `python flow.py`: atexit handlers run.
    sys.exit(main())

"""Runs one flow inside its target environment. Stdlib-only, CPython 3.8+.

The worker starts ``<env python> -u bootstrap.py CONTROL_FD RESULT_FD`` in a new session.
It writes one JSON line on CONTROL_FD (flow file, flow name, parameters, path of envflow's
``flows.py``) and keeps the pipe open: when the worker dies the pipe reaches EOF and this
process kills its whole process group, so no flow outlives its worker. The outcome goes
to RESULT_FD as one JSON object; stdout and stderr belong to the flow.

Exit codes: 0 the flow returned, 1 the flow raised, 3 the flow could not be loaded.
"""

import json
import os
import signal
import sys
import threading
import traceback

EXIT_RAISED = 1
EXIT_LOAD_ERROR = 3


def read_spec(fd):
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            sys.stderr.write("envflow bootstrap: the worker went away before sending the run\n")
            os._exit(EXIT_LOAD_ERROR)
        data += chunk
    return json.loads(data.decode("utf-8"))


def watch_worker(fd):
    """Block until the worker's end of the control pipe closes, then end the whole process group."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)


def on_sigterm(signum, frame):
    # Unwind the flow (finally blocks, context managers) when the worker stops the run.
    raise SystemExit(128 + signum)


def install_envflow_shim(flows_path):
    """Make `from envflow import flow` work in an environment without envflow.

    An envflow installed in the environment wins; otherwise envflow's stdlib-only
    flows.py is loaded by path (the worker's site-packages never join sys.path).
    """
    import importlib.util
    import types

    try:
        if importlib.util.find_spec("envflow") is not None:
            import envflow.flows

            return envflow.flows
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location("envflow.flows", flows_path)
    flows = importlib.util.module_from_spec(spec)
    package = types.ModuleType("envflow")
    package.__path__ = []
    package.__file__ = None
    package.__doc__ = "envflow stand-in for flow environments without envflow installed"
    sys.modules["envflow"] = package
    sys.modules["envflow.flows"] = flows
    spec.loader.exec_module(flows)
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
        module = types.ModuleType("envflow." + sub)
        for name in names:
            setattr(module, name, _Inert)
            setattr(package, name, _Inert)
        sys.modules[module.__name__] = module
        setattr(package, sub, module)
    return flows


def load_flow(spec, flows):
    import importlib.util

    path = spec["flow_file"]
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else "__envflow_flow__"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    loading = getattr(flows, "loading", None)
    if loading is not None:
        with loading():
            module_spec.loader.exec_module(module)
    else:
        module_spec.loader.exec_module(module)
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


def print_user_traceback(error):
    """Print a traceback without the frames of this file and of importlib's machinery."""
    tb = error.__traceback__
    here = os.path.abspath(__file__)
    while tb is not None and (
        os.path.abspath(tb.tb_frame.f_code.co_filename) == here or "importlib" in tb.tb_frame.f_code.co_filename
    ):
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb)


def write_result(fd, outcome):
    data = json.dumps(outcome).encode("utf-8")
    while data:
        written = os.write(fd, data)
        data = data[written:]
    os.close(fd)


def main():
    control_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    for fd in (control_fd, result_fd):
        os.set_inheritable(fd, False)  # the flow's own child processes must not hold them
    spec = read_spec(control_fd)
    threading.Thread(target=watch_worker, args=(control_fd,), name="envflow-watchdog", daemon=True).start()
    signal.signal(signal.SIGTERM, on_sigterm)

    # The flow sees itself as a script: its directory first on sys.path, not this file's.
    flow_dir = os.path.dirname(os.path.abspath(spec["flow_file"]))
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        sys.path[0] = flow_dir
    else:
        sys.path.insert(0, flow_dir)
    sys.argv = [spec["flow_file"]]

    try:
        flows = install_envflow_shim(spec["flows_path"])
        flow = load_flow(spec, flows)
    except BaseException as e:  # noqa: B902 - report any load failure, SystemExit included
        print_user_traceback(e)
        write_result(result_fd, {"ok": False, "stage": "load", "error_type": type(e).__name__, "error": str(e)})
        sys.exit(EXIT_LOAD_ERROR)

    try:
        value = flow.fn(**spec["parameters"])
    except SystemExit as e:
        if e.code not in (None, 0):
            write_result(result_fd, {"ok": False, "stage": "run", "error_type": "SystemExit", "error": str(e.code)})
            sys.exit(EXIT_RAISED)
        value = None
    except BaseException as e:  # noqa: B902 - KeyboardInterrupt is a failure too
        print_user_traceback(e)
        write_result(result_fd, {"ok": False, "stage": "run", "error_type": type(e).__name__, "error": str(e)})
        sys.exit(EXIT_RAISED)

    try:
        outcome = {"ok": True, "result": value}
        json.dumps(value)
    except (TypeError, ValueError) as e:
        outcome = {
            "ok": True,
            "result_error": "the flow returned a {} value, which is not JSON-serialisable ({}); "
            "return plain data (dict, list, str, numbers)".format(type(value).__name__, e),
        }
    write_result(result_fd, outcome)
    # A normal interpreter exit, as for `python flow.py`: atexit handlers run.
    sys.exit(0)


if __name__ == "__main__":
    main()

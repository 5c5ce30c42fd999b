"""The ready parent of a warm pool (the bootstrap's ``serve`` mode). Stdlib-only, CPython 3.8+.

This file is not a module of its own: the worker hands it to the env's interpreter together with
``bootstrap.py`` (this one first, in one sealed in-memory file), so it uses the bootstrap's
functions (``setup``, ``run``, ``to_json``) by name. ``serve`` sets up once, says whether it may
fork (a preload that started threads makes forking unsafe), then forks a process per request:
the child starts a session, enters a Landlock domain of its own (the parent entered the sandbox in
its setup), takes the request's pipes (passed with SCM_RIGHTS) as its stdout, stderr, control and
result, and the request's nonce (the only messages its control pipe accepts carry it), draws new
random seeds, and leaves the serving loop (``Forked``) to run as a fresh process would. The parent reports each child's pid and exit status, and exits when
the worker's end of the socket closes.
"""

import _signal
import marshal
import os
import sys


REHEARSAL = "from envflow import flow\n\n@flow\ndef rehearsal(n=1):\n    return {'n': n}\n"


def rehearse():
    """Load a throwaway flow while waiting for the run: a forked child's first compile and exec copy the
    parent's pages they touch (copy on write), and this way that happens before the run, not in it."""
    module = type(sys)("__envflow_rehearsal__")
    flows = sys.modules.get("envflow.flows")
    with flows.loading():
        exec(compile(REHEARSAL, "<rehearsal>", "exec", dont_inherit=True), module.__dict__)
    to_json(module.rehearsal.fn())


class Forked(Exception):
    """Raised in a child just forked, to leave the parent's serving loop before the run starts."""


def leave(code):
    """End a forked run as an interpreter's exit would (non-daemon threads joined, atexit handlers run,
    output flushed), minus tearing down every object: in a forked child that would copy most of the
    parent's pages just to free them."""
    if "threading" in sys.modules:
        sys.modules["threading"]._shutdown()
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 1)


def threads():
    """How many threads this process has, native ones too: they make forking unsafe."""
    return len(os.listdir("/proc/self/task"))


def serve(sock_fd):
    """A ready parent: set up once, then fork a run process per request until the worker goes away."""
    import socket

    sock = socket.socket(fileno=sock_fd)
    try:
        return _serve(sock)
    except OSError:  # the worker went away mid-message: nothing to report to
        return 0


def _serve(sock):
    import array
    import gc
    import select
    import socket

    _make_undumpable(0)
    setup(marshal.loads(sock.recv(1 << 20)))
    gc.freeze()  # children's collections leave the parent's objects alone: fewer pages copied on write
    sock.sendall(marshal.dumps({"ready": True, "threads": threads(), "failed": SETUP_FAILED, "pid": os.getpid()}, 2))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    _signal.set_wakeup_fd(wake_w)
    _signal.signal(_signal.SIGCHLD, lambda signum, frame: None)
    while True:
        ready = select.select([sock, wake_r], [], [])[0]
        if wake_r in ready:
            os.read(wake_r, 512)
            _report_exits(sock)
        if sock in ready:
            fds = array.array("i")
            data, ancdata, _, _ = sock.recvmsg(1024, socket.CMSG_SPACE(4 * fds.itemsize))
            if not data:
                return 0  # the worker went away
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            _fork(sock, list(fds), data[1:], wake_r, wake_w)


def _fork(sock, fds, nonce, wake_r, wake_w):
    stdout_fd, stderr_fd, control_fd, result_fd = fds
    sys.stdout.flush()
    sys.stderr.flush()
    led_r, led_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _signal.set_wakeup_fd(-1)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        for fd in (wake_r, wake_w, sock.fileno(), led_r):
            os.close(fd)
        os.setsid()
        os.close(led_w)  # it leads its own group now: the worker may signal the group by the pid it gets
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        os.close(stdout_fd)
        os.close(stderr_fd)
        if RULESET:
            restrict(RULESET[0])  # a domain of its own: no other run, waiting child or the parent is in reach
        _reseed()  # it stays undumpable until its run comes (bootstrap.run)
        raise Forked(control_fd, result_fd, nonce)  # args: the run's pipes and nonce
    for fd in (*fds, led_w):
        os.close(fd)
    os.read(led_r, 1)  # EOF once the child has its session
    os.close(led_r)
    sock.sendall(marshal.dumps({"pid": pid}, 2))


def _report_exits(sock):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        sock.sendall(marshal.dumps({"exit": pid, "status": code}, 2))


def _reseed():
    """Forked children share their parent's random state: draw new seeds, as a fresh process would."""
    for name in ("random", "numpy.random"):
        module = sys.modules.get(name)
        if module is not None:
            try:
                module.seed()
            except Exception:  # noqa: BLE001 - a module's own seeding is its business
                pass


def _make_undumpable(flag):
    """The ready parent hides its memory from the runs it forks (same user); its children show theirs."""
    set_dumpable(flag)

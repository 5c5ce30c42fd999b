"""Confining a flow process with Landlock (Linux 5.13+). Stdlib-only, CPython 3.8+.

Handed to the env's interpreter together with ``bootstrap.py`` (this file first); the worker also
imports it to probe the kernel once at start. A confined process, and everything it starts:

- cannot ptrace, or open ``/proc/<pid>/environ|mem|fd/*`` of, any process outside its own Landlock
  domain (the worker, the scheduler, the UI, ready parents, processes waiting for their run, other
  runs), and from ABI 6 cannot signal them;
- cannot read or change the worker's state dir (``deny``), and can read and execute, but not change,
  the built-env cache (``read``). Landlock is an allowlist: every existing entry of each protected
  root's ancestors that is not on the way to a protected root gets every right; the ancestors
  themselves get only listing, so no new entry can be made directly in them.

Where the kernel or a seccomp profile refuses Landlock, ``confine`` returns the reason and the
process runs unconfined (the worker has said so once at start).
"""

import os

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # the same on every Linux architecture
PR_SET_NO_NEW_PRIVS = 38
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
SCOPE_SIGNAL = 1 << 1  # ABI 6

FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FS_ABI1 = (1 << 13) - 1  # execute .. make_sym
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV  # rights a non-directory takes
READ_EXECUTE = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR


_LIBC: list = []  # ctypes and libc, loaded on first use (ctypes costs a cold run an import)


def libc():
    """(ctypes, libc); raises OSError where there is no ctypes or no libc."""
    if not _LIBC:
        try:
            import ctypes
        except ImportError as e:
            raise OSError(0, "no ctypes in this environment") from e
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.prctl.restype = ctypes.c_int

        class RulesetAttr(ctypes.Structure):
            _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                        ("scoped", ctypes.c_uint64)]

        class PathBeneathAttr(ctypes.Structure):
            _pack_ = 1
            _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

        ctypes.RulesetAttr, ctypes.PathBeneathAttr = RulesetAttr, PathBeneathAttr
        _LIBC.extend((ctypes, lib))
    return _LIBC[0], _LIBC[1]


def _syscall(number, *args):
    ctypes, lib = libc()
    result = lib.syscall(ctypes.c_long(number), *args)
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


def prctl(option, value):
    ctypes, lib = libc()
    if lib.prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def abi():
    """The kernel's Landlock ABI version; raises OSError (ENOSYS, EOPNOTSUPP, EPERM under seccomp) if none."""
    ctypes = libc()[0]
    return _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))


def handled_rights(version):
    rights = FS_ABI1
    if version >= 2:
        rights |= FS_REFER
    if version >= 3:
        rights |= FS_TRUNCATE
    if version >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def _inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def plan(deny, read):
    """The rules (path, rights) that leave ``deny`` unreadable and ``read`` read-only, everything else
    open (rights None: every handled right; a non-directory keeps its file rights)."""
    protected = {}
    for paths, rights in ((deny, 0), (read, READ_EXECUTE)):
        for path in paths:
            protected[os.path.realpath(path)] = rights
    on_the_way = set()
    for root in protected:
        path = root
        while path not in on_the_way:
            on_the_way.add(path)
            path = os.path.dirname(path)
    parents = {os.path.dirname(p) for p in on_the_way if p != "/"}
    rules = [("/", FS_READ_DIR)]  # names can be listed everywhere; no entry made directly in an ancestor
    for folder in sorted(on_the_way):
        enclosing = [r for r in protected if _inside(folder, r)]
        rights = protected[max(enclosing, key=len)] if enclosing else None
        if folder in protected and folder not in parents:
            if rights:
                rules.append((folder, rights))  # a protected leaf: one rule for all beneath
            continue
        if rights == 0:
            continue
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            entry = os.path.join(folder, name)
            if entry not in on_the_way:
                rules.append((entry, rights))
    return rules


def build(deny, read):
    """A Landlock ruleset fd for ``plan(deny, read)`` (with signal scoping where the kernel has it).

    :raises OSError: the kernel or a seccomp profile refuses Landlock.
    """
    version = abi()
    ctypes = libc()[0]
    handled = handled_rights(version)
    attr = ctypes.RulesetAttr(handled, 0, SCOPE_SIGNAL if version >= 6 else 0)
    size = ctypes.sizeof(attr) if version >= 6 else (16 if version >= 4 else 8)
    ruleset = _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        for path, rights in plan(deny, read):
            try:
                fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # gone meanwhile
            try:
                allowed = handled if rights is None else rights & handled
                if os.fstat(fd).st_mode & 0o170000 != 0o040000:
                    allowed &= FILE_RIGHTS
                if allowed:
                    rule = ctypes.PathBeneathAttr(allowed, fd)
                    _syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH),
                             ctypes.byref(rule), ctypes.c_uint32(0))
            except OSError:
                pass  # an entry Landlock takes no rule on (a special file): it stays closed
            finally:
                os.close(fd)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def restrict(ruleset):
    """Enter a new Landlock domain with ``ruleset`` (no new privileges first, as Landlock requires)."""
    ctypes = libc()[0]
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))


def set_dumpable(flag):
    """PR_SET_DUMPABLE: a process waiting for its run hides its memory and /proc entries (same uid)."""
    try:
        prctl(4, flag)
    except OSError:
        pass


def confine(config):
    """Confine this process as ``config`` says (``{"deny": [...], "read": [...]}``); returns the ruleset
    fd (kept for a new domain per forked child) or None with ``config`` unset or Landlock missing."""
    if not config:
        return None
    try:
        ruleset = build(config.get("deny") or (), config.get("read") or ())
        restrict(ruleset)
    except OSError:
        return None
    return ruleset


def probe():
    """What confinement this kernel gives, in one line, and whether it is complete (for the worker's log)."""
    try:
        version = abi()
        ruleset = build((), ())
        pid = os.fork()  # the worker itself stays unconfined: restrict a throwaway child
        if pid == 0:
            try:
                restrict(ruleset)
                os._exit(0)
            except OSError as e:
                os._exit(e.errno or 1)
        os.close(ruleset)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise OSError(code, os.strerror(code))
    except (OSError, AttributeError) as e:
        return False, ("Landlock is unavailable ({}): flows run unconfined, so a flow can read other runs' "
                       "and envflow's process environments and memory where they are dumpable, and write the "
                       "state dir and built envs".format(getattr(e, "strerror", None) or e))
    if version < 6:
        return True, f"Landlock ABI {version}: flows confined, but can still signal processes of the same uid"
    return True, f"Landlock ABI {version}: flows confined"

"""The sandbox's worker program: axpo_core/envs/sandbox.py runs this file by path,
``python -I -S -B sandbox_worker.py <config-json>`` (under bubblewrap where it works, this file bound in
read-only), and its module doc describes the isolation this program sets up on itself.

It imports only the standard library (PIL lazily, when there are images to load): inside the sandbox no
other project code is visible. Nothing runs on import; sandbox.py imports it only for its path (so the
task code digest, tasks/persistence.py, covers it).

Over 600 lines: it is one program, the supervisor and the executor of one process pair, and every line of it
runs inside the sandbox; splitting it would mean binding more project files into the sandbox.
"""

import ast
import builtins
import io
import json
import linecache
import os
import resource
import select
import signal
import sys
import traceback

HEADER = 4
MAX_REPLY_BYTES = 16 * 1024 * 1024
WORKER_FILENAME = __file__  # its own frames, left out of the tracebacks the model sees


def send(fd, obj):
    data = json.dumps(obj).encode("utf-8")
    data = len(data).to_bytes(HEADER, "big") + data
    while data:
        data = data[os.write(fd, data):]


def read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv(fd, limit=None):
    """One message, or None at EOF. ValueError for a frame longer than `limit` or not JSON."""
    header = read_exact(fd, HEADER)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    if limit is not None and size > limit:
        raise ValueError(f"a frame of {size} bytes")
    body = read_exact(fd, size)
    return None if body is None else json.loads(body)


class Capture(io.TextIOBase):
    """sys.stdout/sys.stderr during a call: keeps the first `limit` characters, counts the rest."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, limit):
        self.limit, self.total, self.kept, self.parts = limit, 0, 0, []

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self.total += len(s)
        if self.kept < self.limit:
            piece = s[: self.limit - self.kept]
            self.parts.append(piece)
            self.kept += len(piece)
        return len(s)

    def getvalue(self):
        return "".join(self.parts)


def set_limits(cfg):
    mb = 1024 * 1024
    limits = [
        (resource.RLIMIT_AS, cfg["memory_mb"] * mb, cfg["memory_mb"] * mb),
        (resource.RLIMIT_CPU, cfg["cpu_time_s"], cfg["cpu_time_s"] + 1),
        (resource.RLIMIT_FSIZE, cfg["max_file_mb"] * mb, cfg["max_file_mb"] * mb),
        (resource.RLIMIT_NOFILE, 256, 256),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NPROC, 0, 0),
    ]
    for which, soft, hard in limits:
        old_hard = resource.getrlimit(which)[1]
        if old_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))


def install_seccomp(program_hex):
    """Install the parent's BPF program on this process; "on" once fork() is seen to fail, else why not."""
    if not program_hex:
        return "no filter for this machine architecture"
    try:
        import ctypes

        program = bytes.fromhex(program_hex)
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        buffer = ctypes.create_string_buffer(program, len(program))

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
        PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
        if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return "prctl(PR_SET_NO_NEW_PRIVS) failed: " + os.strerror(ctypes.get_errno())
        if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
            return "prctl(PR_SET_SECCOMP) failed: " + os.strerror(ctypes.get_errno())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:  # the filter is only trusted once seen to work
        pid = os.fork()
    except PermissionError:
        return "on"
    except OSError as exc:
        return f"fork() failed with {exc} instead of EPERM"
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return "the filter was installed but fork() still works"


def private_scratch(cfg):
    """Mount a tmpfs of `scratch_bytes` and `scratch_inodes` on the scratch dir, in a user and mount
    namespace of the worker's own, and make it the cwd; "on", or why not.

    Why: tmpfs pages are not in RLIMIT_AS and neither are its inodes (about 1 KiB of kernel memory each,
    which a tmpfs `size` does not count), and a bind-mounted host folder has no total quota at all. Only
    the owner of a mount namespace can set `nr_inodes`, hence the namespace: mapping the trainer's uid
    back, so files and `os.getuid()` look as before. The capabilities the new user namespace grants are
    dropped before returning, whatever happened; a worker that cannot drop them exits."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    CLONE_NEWUSER, CLONE_NEWNS, MS_NOSUID, MS_NODEV = 0x10000000, 0x00020000, 2, 4
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        return "unshare(CLONE_NEWUSER | CLONE_NEWNS) failed: " + os.strerror(ctypes.get_errno())
    try:
        maps = (("setgroups", "deny"), ("uid_map", f"{cfg['uid']} {outer_uid} 1"),
                ("gid_map", f"{cfg['gid']} {outer_gid} 1"))
        for name, text in maps:
            fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        options = f"size={cfg['scratch_bytes']},nr_inodes={cfg['scratch_inodes']},mode=0700"
        scratch = cfg["scratch"].encode()
        if libc.mount(b"tmpfs", scratch, b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()) != 0:
            return "mount(tmpfs) failed: " + os.strerror(ctypes.get_errno())
        os.chdir(cfg["scratch"])  # the old cwd is the folder underneath the new mount
        return "on"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        drop_capabilities(libc)


def drop_capabilities(libc):
    """Empty the bounding, effective, permitted and inheritable sets (ambient follows); exit if they
    are not empty afterwards: no user code may ever run with a capability."""
    import ctypes

    PR_CAPBSET_DROP, CAP_VERSION_3 = 24, 0x20080522
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header = ctypes.create_string_buffer(CAP_VERSION_3.to_bytes(4, sys.byteorder) + bytes(4), 8)
    data = ctypes.create_string_buffer(bytes(24), 24)  # two __user_cap_data_struct, all zero
    libc.capset(header, data)
    with open("/proc/self/status") as f:
        sets = {line.split(":")[0]: int(line.split()[1], 16) for line in f if line.startswith("Cap")}
    if any(sets.values()):
        os.write(2, f"sandbox worker: capabilities left after dropping them: {sets}\n".encode())
        os._exit(70)


def saved_signal_handlers():
    handlers = {}
    for sig in signal.valid_signals():
        try:
            handlers[sig] = signal.getsignal(sig)
        except (OSError, ValueError):
            pass
    return handlers


def reset_between_calls(handlers):
    """Leave nothing of the call able to run before the next one: no interval timer, no user handler."""
    for which in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
        signal.setitimer(which, 0)
    for sig, handler in handlers.items():
        try:
            if signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        except (OSError, ValueError, TypeError):
            pass


def neuter(module, name, message):
    def stub(*args, **kwargs):
        raise PermissionError(message)

    if hasattr(module, name):
        setattr(module, name, stub)


def neuter_unaudited_primitives():
    """Replace functions that reach the OS without raising an audit event with stubs."""
    import _posixsubprocess

    processes = "starting or signalling processes is not allowed in the sandbox"
    neuter(_posixsubprocess, "fork_exec", processes)
    neuter(signal, "pidfd_send_signal", processes)
    for module in (os, sys.modules["posix"]):
        neuter(module, "pidfd_open", processes)
        # seccomp refuses it anyway (EPERM); this says why
        neuter(module, "memfd_create", "memfd_create is not allowed in the sandbox: its memory would be "
                                       "outside the sandbox's memory limit")
        neuter(module, "mknod", "creating special files is not allowed in the sandbox")
        neuter(module, "mkfifo", "creating special files is not allowed in the sandbox")


def install_audit_hook(scratch, read_roots, path_types):
    # Every name the hook uses is bound here, so user code that monkeypatches os or builtins
    # cannot change its decisions.
    lstat, readlink, getcwd = os.lstat, os.readlink, os.getcwd
    _type, _isinstance, _int, _str, _bytes, _len = type, isinstance, int, str, bytes, len
    _OSError, _ValueError, _PermissionError, _ImportError = OSError, ValueError, PermissionError, ImportError
    S_IFMT, S_IFLNK, S_IFREG, S_IFDIR = 0o170000, 0o120000, 0o100000, 0o040000
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    DIR_FLAGS = os.O_DIRECTORY | getattr(os, "O_PATH", 0)
    READ_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
    read_roots = tuple(read_roots)
    path_types = tuple(path_types)

    def deny(message):
        raise _PermissionError(message)

    def resolve(path):
        """realpath(path) (non-strict) from captured primitives."""
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        pending = path.split("/")[::-1]
        parts = []
        links = 0
        while pending:
            name = pending.pop()
            if name == "" or name == ".":
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(name)
            current = "/" + "/".join(parts)
            try:
                mode = lstat(current).st_mode
            except (_OSError, _ValueError):
                continue
            if mode & S_IFMT == S_IFLNK:
                links += 1
                if links > 40:
                    deny("too many levels of symbolic links")
                target = readlink(current)
                parts.pop()
                if target.startswith("/"):
                    parts = []
                pending.extend(target.split("/")[::-1])
        return "/" + "/".join(parts)

    def to_str(path, event):
        kind = _type(path)
        if _isinstance(path, _str):  # unbound methods: a subclass cannot run its own code here
            return _str.__str__(path)
        if _isinstance(path, _bytes):
            return _bytes.decode(path, "utf-8", "surrogateescape")
        if kind is _int:
            try:
                return readlink("/proc/self/fd/" + _str(path))
            except (_OSError, _ValueError):
                deny(f"{event} on file descriptor {path} is not allowed in the sandbox")
        if path is None:
            return "."
        if kind in path_types:  # exact types only: a subclass could answer differently the 2nd time
            return path.__fspath__()
        deny(f"{event}: paths must be str, bytes or pathlib.Path in the sandbox")

    def inside(path, root):
        return path == root or path.startswith(root + "/")

    def readable(path, event):
        p = resolve(to_str(path, event))
        if inside(p, scratch) or p in READ_DEVICES:
            return p
        for root in read_roots:
            if inside(p, root):
                return p
        deny(f"access to {p!r} is not allowed: the sandbox can only read its working directory "
             "and the Python installation")

    def writable(path, event):
        p = resolve(to_str(path, event))
        if inside(p, scratch) or p == "/dev/null":
            return p
        deny(f"writing {p!r} is not allowed: the sandbox can only write inside its working directory")

    def file_type(p):
        try:
            return lstat(p).st_mode & S_IFMT
        except (_OSError, _ValueError):
            return None

    def on_open(event, args):
        path, mode, flags = args[0], args[1], args[2]
        if _type(path) is _int:
            return  # wrapping a descriptor that is already open
        flags = flags if _type(flags) is _int else 0
        p = writable(path, event) if flags & WRITE_FLAGS else readable(path, event)
        if inside(p, scratch):
            kind = file_type(p)
            if kind is not None and kind != S_IFREG and kind != S_IFDIR:
                deny(f"opening {p!r} is not allowed: only regular files can be opened in the sandbox")
        if mode is None:  # os.open, which may carry a dir_fd that the event does not report
            raw = to_str(path, event)
            if not raw.startswith("/") and ".." in raw.split("/"):
                deny("os.open with a relative path containing '..' is not allowed in the sandbox")
            if not inside(p, scratch) and (flags & DIR_FLAGS or file_type(p) == S_IFDIR):
                deny(f"opening the directory {p!r} is not allowed in the sandbox")

    def path_event(path_positions, dir_fd_positions, check):
        def handler(event, args):
            for i in dir_fd_positions:
                if i < _len(args) and _type(args[i]) is _int and args[i] >= 0:
                    deny(f"{event} with dir_fd is not allowed in the sandbox")
            for i in path_positions:
                if i < _len(args):
                    if check is writable and event == "os.truncate" and _type(args[i]) is _int:
                        continue  # ftruncate needs a descriptor opened for writing, which was checked
                    check(args[i], event)
        return handler

    def network(event, args):
        deny(f"network access is not allowed in the sandbox ({event})")

    def processes(event, args):
        deny(f"starting or signalling processes is not allowed in the sandbox ({event})")

    def blocked(event, args):
        deny(f"{event} is not allowed in the sandbox")

    def on_sqlite_connect(event, args):
        database = args[0] if args else None
        if _type(database) is _str and (database == ":memory:" or database == ""):
            return
        if _type(database) is _str and database.startswith("file:"):
            deny("sqlite URI filenames are not allowed in the sandbox")
        writable(database, event)

    def ctypes_dlopen(event, args):
        if args and args[0] is not None:  # dlopen(NULL) is what `import ctypes` itself does
            deny(f"loading native libraries is not allowed in the sandbox ({event})")

    blocked_modules = frozenset({
        "_posixsubprocess", "_posixshmem", "_testcapi", "_testinternalcapi", "_testmultiphase",
        "_testsinglephase", "_testbuffer", "_testimportmultiple", "_xxsubinterpreters", "_xxinterpchannels",
    })

    def on_import(event, args):
        name = args[0] if args and _type(args[0]) is _str else ""
        if name.partition(".")[0] in blocked_modules:
            raise _ImportError(f"module {name!r} is not available in the sandbox")

    handlers = {
        "open": on_open,
        "import": on_import,
        "os.listdir": path_event((0,), (), readable),
        "os.scandir": path_event((0,), (), readable),
        "os.chdir": path_event((0,), (), readable),
        "os.getxattr": path_event((0,), (), readable),
        "os.listxattr": path_event((0,), (), readable),
        "os.fwalk": path_event((0,), (3,), readable),
        "os.mkdir": path_event((0,), (2,), writable),
        "os.rmdir": path_event((0,), (1,), writable),
        "os.remove": path_event((0,), (1,), writable),
        "os.rename": path_event((0, 1), (2, 3), writable),
        "os.link": path_event((0, 1), (2, 3), writable),
        "os.chmod": path_event((0,), (2,), writable),
        "os.chown": path_event((0,), (3,), writable),
        "os.utime": path_event((0,), (3,), writable),
        "os.truncate": path_event((0,), (), writable),
        "os.setxattr": path_event((0,), (), writable),
        "os.removexattr": path_event((0,), (), writable),
        "shutil.rmtree": path_event((0,), (1,), writable),
        "ctypes.dlopen": ctypes_dlopen,
        "sqlite3.connect": on_sqlite_connect,
    }
    for event in ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                  "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg"):
        handlers[event] = processes
    for event in ("os.symlink", "resource.setrlimit", "resource.prlimit", "sys.settrace", "sys.setprofile",
                  "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sqlite3.enable_load_extension",
                  "sqlite3.load_extension", "webbrowser.open", "ctypes.call_function", "ctypes.cdata",
                  "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.string_at", "ctypes.wstring_at",
                  "ctypes.PyObj_FromPtr", "sys.addaudithook"):
        handlers[event] = blocked
    get_handler = handlers.get

    def hook(event, args):
        handler = get_handler(event)
        if handler is not None:
            handler(event, args)
        elif event.startswith("socket."):
            network(event, args)

    sys.addaudithook(hook)


def load_images(paths, images):
    from PIL import Image

    for path in paths:
        with Image.open(path) as im:
            im.load()
            images.append(im.copy())


def describe(exc, limit):
    """(one-line error, traceback text without the worker's own frames) for an exception. The message is
    cut to `limit` characters only so that a huge one does not travel; what the model sees is capped by
    the parent's tool session."""
    try:
        text = "".join(traceback.format_exception_only(type(exc), exc))
        if len(text) > limit:
            text = text[:limit] + " ...\n"
        line = text.strip().splitlines()[-1]
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != WORKER_FILENAME]
        if frames and not isinstance(exc, SyntaxError):
            text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames[-4:])) + text
    except BaseException:
        line = text = type(exc).__name__
    return line, text


def run(request, ns, images, count, limit):
    out = Capture(limit)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = out
    error = tb = None
    try:
        try:
            if request.get("images"):
                load_images(request["images"], images)
                ns["_pil_images"] = images
        except BaseException as exc:
            error, tb = "could not load the images: " + describe(exc, limit)[0], None
        else:
            code = request["code"]
            filename = f"<python-{count}>"
            linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
            try:
                tree = ast.parse(code, filename, "exec")
                last = None
                if tree.body and isinstance(tree.body[-1], ast.Expr):
                    last = ast.Expression(tree.body.pop().value)
                exec(compile(tree, filename, "exec"), ns)
                if last is not None:
                    value = eval(compile(last, filename, "eval"), ns)
                    if value is not None:
                        ns["_"] = value
                        out.write(repr(value) + "\n")
            except BaseException as exc:
                error, tb = describe(exc, limit)
    finally:
        sys.stdout, sys.stderr = saved
    return {"output": out.getvalue(), "total": out.total, "error": error, "traceback": tb}


def set_not_dumpable():
    """PR_SET_DUMPABLE 0: a process of the same uid without CAP_SYS_PTRACE can no longer open this one's
    /proc files (its descriptors, its memory) or attach to it. "on", or why not."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_DUMPABLE = 4
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            return "prctl(PR_SET_DUMPABLE) failed: " + os.strerror(ctypes.get_errno())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "on"


def well_formed(reply, request_id):
    return (
        isinstance(reply, dict)
        and reply.get("id") == request_id
        and isinstance(reply.get("output"), str)
        and isinstance(reply.get("total"), int)
        and isinstance(reply.get("error"), (str, type(None)))
        and isinstance(reply.get("traceback"), (str, type(None)))
    )


def exit_as(pid):
    """Exit with the executor's exit status (128 + N for signal N), so the parent can say why it died."""
    for _ in range(100):  # its pipe closes just before it can be reaped
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        select.select([], [], [], 0.01)
    else:  # alive, but it closed its pipe
        os.kill(pid, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def supervise(req_fd, resp_fd, to_executor, from_executor, executor, guard, quota):
    """Relay each request to the executor and exactly one well-formed reply to it back to the parent.

    This process alone holds the parent's pipes and runs no user code, so the code cannot write to the
    reply channel. What the executor sends is the code's to shape, like its printed output; a frame that
    is malformed, too long, for another request or followed by more bytes is answered with a protocol
    error, and the sandbox ends (the parent starts a fresh one)."""
    ready = recv(from_executor, MAX_REPLY_BYTES)
    if ready is None:
        exit_as(executor)
    send(resp_fd, {**ready, "supervisor": guard, "quota": quota})
    while True:
        request = recv(req_fd)
        if request is None:
            return
        send(to_executor, request)
        try:
            reply = recv(from_executor, MAX_REPLY_BYTES)
        except ValueError:
            reply = "malformed"
        if reply is None:
            exit_as(executor)
        extra = select.select([from_executor], [], [], 0)[0]
        if extra or not well_formed(reply, request["id"]):
            send(resp_fd, {"id": request["id"], "protocol_error": "the executor wrote outside its protocol"})
            return
        send(resp_fd, reply)


def main():
    cfg = json.loads(sys.argv[1])
    req_fd, resp_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    sys.stdin = open(os.devnull)
    sys.path.extend(cfg["site_dirs"])
    os.chdir(cfg["scratch"])
    quota = private_scratch(cfg)  # before the fork: the executor writes into the same tmpfs
    # Two processes: this one (the supervisor) keeps the parent's pipes; the executor, which runs the
    # user code, gets only its own pair and never holds a descriptor of the parent's.
    to_executor_r, to_executor_w = os.pipe()
    from_executor_r, from_executor_w = os.pipe()
    executor = os.fork()
    if executor == 0:
        for fd in (req_fd, resp_fd, to_executor_w, from_executor_r):
            os.close(fd)
        try:
            execute(cfg, to_executor_r, from_executor_w)
        finally:
            os._exit(0)
    os.close(to_executor_r)
    os.close(from_executor_w)
    # No handler for SIGINT: as pid 1 of its namespace, the supervisor then ignores signals from inside it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    guard = set_not_dumpable()
    set_limits(cfg)
    seccomp = install_seccomp(cfg["seccomp"])
    if guard == "on" and seccomp != "on":
        guard = "seccomp: " + seccomp
    supervise(req_fd, resp_fd, to_executor_w, from_executor_r, executor, guard, quota)


def execute(cfg, req_fd, resp_fd):
    """The executor: limits, seccomp and the audit hook on itself, then the user code, call by call."""
    set_limits(cfg)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    seccomp = install_seccomp(cfg["seccomp"])
    neuter_unaudited_primitives()
    import pathlib

    real = os.path.realpath
    roots = {real(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                               os.path.dirname(os.__file__), *cfg["site_dirs"], *cfg["read_roots"])}
    install_audit_hook(real(cfg["scratch"]), sorted(roots),
                       (pathlib.PosixPath, pathlib.PurePosixPath, os.DirEntry))
    images = []
    ns = {"__name__": "__main__", "__builtins__": builtins, "_pil_images": images}
    handlers = saved_signal_handlers()
    preload_error = None
    if cfg["preload"]:
        source = cfg["preload"]
        linecache.cache["<preload>"] = (len(source), None, source.splitlines(True), "<preload>")
        try:
            exec(compile(source, "<preload>", "exec"), ns)
        except BaseException as exc:
            preload_error = describe(exc, cfg["max_output_chars"])[1]
        reset_between_calls(handlers)
    send(resp_fd, {"ready": True, "uid": os.getuid(), "pid": os.getpid(), "seccomp": seccomp,
                   "preload_error": preload_error})
    count = 0
    while True:
        request = recv(req_fd)
        if request is None:
            return
        count += 1
        signal.alarm(cfg["alarm_s"])
        reply = run(request, ns, images, count, cfg["max_output_chars"])
        signal.alarm(0)
        reset_between_calls(handlers)
        reply["id"] = request.get("id")
        send(resp_fd, reply)


if __name__ == "__main__":
    main()

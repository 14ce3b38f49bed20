"""A sandboxed, persistent Python interpreter for the agent's ``python`` tool (DESIGN.md §3).

Why a subprocess: the model's code must not be able to hang, crash or exhaust the trainer, so it runs in
a separate interpreter (one per rollout) that we can kill at any time. The worker is a small
self-contained script run with ``python -I -S -B`` (no site, no user environment, no .pyc writes); it
does not import torch or transformers, so it starts in a few tens of milliseconds. Variables persist
across calls; the rollout's images are written as PNG files and loaded as ``_pil_images``.

Protocol: 4-byte big-endian length + UTF-8 JSON, parent -> worker on the worker's stdin, worker ->
parent on its stdout. The worker moves both pipes to private descriptors and points fds 0 and 1 at
/dev/null before running user code; ``sys.stdout``/``sys.stderr`` are captured in memory (bounded), so
user prints never mix with the protocol. The parent treats any malformed reply as a crashed worker.

What is enforced, layer by layer (each holds on its own where it applies):

1. rlimits, set by the worker before any user code and with soft == hard so they cannot be raised:
   RLIMIT_AS (``memory_mb``: large allocations raise MemoryError), RLIMIT_CPU (lifetime CPU seconds;
   SIGXCPU/SIGKILL), RLIMIT_FSIZE (per file; SIGXFSZ ignored so writes fail with EFBIG), RLIMIT_NOFILE,
   RLIMIT_CORE = 0 and RLIMIT_NPROC = 0 (no new processes or threads; the kernel enforces it for every
   uid except 0).
2. An audit hook (``sys.addaudithook``; cannot be removed), installed before user code, which
   raises PermissionError for: all ``socket.*`` events (no network, including DNS); process creation
   and signalling (``os.fork``/``forkpty``/``exec``/``posix_spawn``/``system``, ``subprocess.Popen``,
   ``os.kill``/``killpg``; ``_posixsubprocess.fork_exec`` is replaced by a stub and re-importing the
   module is refused); ctypes foreign calls, raw-memory access and dlopen of libraries (importing
   ctypes still works, so numpy/pandas import); ``open``/``os.open`` of paths outside the allowed roots
   (read: scratch dir, the interpreter's prefixes, the given site-packages, the image folder and
   /dev/null, /dev/zero, /dev/(u)random; write: the scratch dir and /dev/null only); mkdir, remove,
   rename, link, chmod, chown, utime, truncate, xattr and rmtree outside the scratch dir; symlinks;
   directory listing and chdir outside the readable roots; opening device nodes, FIFOs or sockets;
   ``dir_fd`` arguments; sqlite databases outside the scratch dir; ``resource.setrlimit``,
   ``sys.settrace``/``setprofile``, ``gc.get_referrers`` and friends. Paths are resolved with the
   hook's own realpath built from captured C functions, so monkeypatching ``os``/``builtins`` does not
   change its decisions.
3. OS isolation when the parent runs as root, probed once per interpreter (``_isolation_for``) and
   left out silently where the host refuses it:
   ``unshare --net --pid --ipc --mount --fork --kill-child``: no network interfaces at all, no view of
   or signals to host processes, the worker dies with its unshare parent; inside the new mount
   namespace a small sh script remounts every mount read-only and bind-mounts only the scratch dir back
   read-write, so even native code (e.g. pyarrow's C++ file writers) cannot write anywhere else. Then
   ``setpriv``: run as ``nobody`` when nobody can run this very interpreter (same version and base
   prefix; the scratch dir is chowned to it), otherwise stay uid 0 with an empty capability bounding set
   and ``no_new_privs`` (no CAP_DAC_OVERRIDE, CAP_MKNOD, CAP_KILL, CAP_SYS_RESOURCE, CAP_SYS_ADMIN, so
   the read-only remounts cannot be undone). On the development box (root in a container, interpreter
   under /root with mode 0700) the result is "namespaces with a read-only filesystem + uid 0 without
   capabilities"; ``Sandbox.isolation`` says what a given host got. As a non-root user there is no OS
   layer, but RLIMIT_NPROC then applies.
4. Wall-clock timeout per call: the parent SIGKILLs the worker's whole process group (the worker is
   started in a new session) and the next call starts a fresh worker; the worker also arms
   ``alarm(timeout + 5)`` as a backstop in case the parent died mid-call. A worker whose parent dies
   while idle sees EOF on its request pipe and exits.
5. A private scratch directory (the worker's cwd, HOME and TMPDIR), removed by ``close()``; a scrubbed
   environment (single-threaded BLAS).

Known limits: CPython audit hooks are a tripwire, not a security boundary against deliberately
adversarial code (introspection can reach unaudited primitives), and native extensions bypass them:
they can still *read* files outside the roots (the read-only mounts stop their writes). The OS layers
are what hold against that, and they are strongest when the worker can run as nobody. As uid 0 the
kernel does not apply RLIMIT_NPROC, so forking is stopped by the hook (and contained by the pid
namespace), and user threads are allowed. There is no disk quota beyond RLIMIT_FSIZE per file. Linux
only. A Sandbox is not thread-safe; use one per rollout.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import pwd
import select
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

logger = logging.getLogger(__name__)

_HEADER_BYTES = 4
_MAX_REPLY_BYTES = 16 * 1024 * 1024
_MAX_TRACEBACK_CHARS = 1500
_STARTUP_TIMEOUT_S = 20.0
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})

# The worker: a self-contained script, run by _WORKER_BOOT as ``python -I -S -B -c _WORKER_BOOT
# _WORKER_SOURCE <config-json>`` so its frames carry a filename that tracebacks can leave out. It imports
# only the standard library (PIL lazily, when there are images to load).
_WORKER_SOURCE = r'''
import ast, builtins, io, json, linecache, os, resource, signal, sys, traceback

HEADER = 4
WORKER_FILENAME = "<sandbox-worker>"


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


def recv(fd):
    header = read_exact(fd, HEADER)
    if header is None:
        return None
    body = read_exact(fd, int.from_bytes(header, "big"))
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
                  "ctypes.PyObj_FromPtr"):
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


def describe(exc):
    """(one-line error, traceback text without the worker's own frames) for an exception."""
    try:
        only = traceback.format_exception_only(type(exc), exc)
        line = "".join(only).strip().splitlines()[-1]
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != WORKER_FILENAME]
        text = "".join(only)
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
            error, tb = "could not load the images: " + describe(exc)[0], None
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
                error, tb = describe(exc)
    finally:
        sys.stdout, sys.stderr = saved
    return {"output": out.getvalue(), "total": out.total, "error": error, "traceback": tb}


def main():
    cfg = json.loads(sys.argv[2])
    req_fd, resp_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    sys.stdin = open(os.devnull)
    sys.path.extend(cfg["site_dirs"])
    os.chdir(cfg["scratch"])
    set_limits(cfg)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    neuter_unaudited_primitives()
    import pathlib

    real = os.path.realpath
    roots = {real(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                               os.path.dirname(os.__file__), *cfg["site_dirs"], *cfg["read_roots"])}
    install_audit_hook(real(cfg["scratch"]), sorted(roots),
                       (pathlib.PosixPath, pathlib.PurePosixPath, os.DirEntry))
    images = []
    ns = {"__name__": "__main__", "__builtins__": builtins, "_pil_images": images}
    send(resp_fd, {"ready": True, "uid": os.getuid(), "pid": os.getpid()})
    count = 0
    while True:
        request = recv(req_fd)
        if request is None:
            return
        count += 1
        signal.alarm(cfg["alarm_s"])
        reply = run(request, ns, images, count, cfg["max_output_chars"])
        signal.alarm(0)
        send(resp_fd, reply)


main()
'''
_WORKER_BOOT = "import sys; exec(compile(sys.argv[1], '<sandbox-worker>', 'exec'))"


@dataclass(frozen=True)
class RunResult:
    """The outcome of one ``Sandbox.run``: ``text`` is what the model sees; it starts with "Error:" iff
    ``error`` (a short one-line description) is set."""

    text: str
    error: str | None = None


@dataclass(frozen=True)
class _Isolation:
    prefix: tuple[str, ...]  # launcher (unshare/sh/setpriv) put in front of the interpreter; see _SCRATCH
    run_as: tuple[int, int] | None  # (uid, gid) the worker runs as; None: the parent's user
    description: str


# In _Isolation.prefix, this argument stands for the sandbox's scratch dir (NUL cannot occur in argv).
_SCRATCH = "\0scratch"

# sh runs as pid 1 of the new pid namespace and the worker as its child: the kernel ignores default-action
# signals such as SIGXCPU or SIGALRM sent to a namespace's init, and sh reports how its child died.
_RUN_AS_CHILD = '"$@"; exit $?'

# The same, after making every mount read-only in the new mount namespace and bind-mounting the scratch
# dir ($1) back read-write, so not even native code can write elsewhere.
_READ_ONLY_MOUNTS = r"""
scratch="$1"; shift
while read -r _ mount_point _ options _; do
  case ",$options," in *,ro,*) continue ;; esac
  mount -o remount,bind,ro "$mount_point" 2>/dev/null
done < /proc/self/mounts
mount --bind "$scratch" "$scratch" && mount -o remount,bind,rw "$scratch" || exit 125
"$@"; exit $?
"""

_ISOLATION: dict[str, _Isolation] = {}
_ISOLATION_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[Sandbox] = weakref.WeakSet()


def _probe(cmd: Sequence[str], timeout_s: float = 20.0) -> str | None:
    """Run a short command; its stdout if it succeeded, else None."""
    try:
        done = subprocess.run(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            timeout=timeout_s,
            check=False,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode(errors="replace") if done.returncode == 0 else None


def _fill(prefix: Sequence[str], scratch: str) -> list[str]:
    return [scratch if part == _SCRATCH else part for part in prefix]


def _isolation_for(executable: str) -> _Isolation:
    """Pick the strongest OS isolation this host allows for `executable` (probed once, then cached)."""
    with _ISOLATION_LOCK:
        if executable not in _ISOLATION:
            probe_dir = tempfile.mkdtemp(prefix="axpo-sandbox-probe-")
            try:
                _ISOLATION[executable] = _probe_isolation(executable, probe_dir)
            finally:
                shutil.rmtree(probe_dir, ignore_errors=True)
            logger.info("python sandbox isolation: %s", _ISOLATION[executable].description)
        return _ISOLATION[executable]


_LAYERS = "rlimits, audit hook"


def _probe_isolation(executable: str, probe_dir: str) -> _Isolation:
    if os.geteuid() != 0:
        return _Isolation((), None, f"same user as the trainer (RLIMIT_NPROC applies), {_LAYERS}")
    prefix, parts = _probe_namespaces(probe_dir)
    setpriv = shutil.which("setpriv")
    if setpriv:
        no_caps = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]
        as_nobody = _probe_nobody(executable, prefix, no_caps, probe_dir)
        if as_nobody is not None:
            launcher, ids = as_nobody
            return _Isolation(tuple(launcher), ids, ", ".join([*parts, "uid nobody", _LAYERS]))
        launcher = [*prefix, *no_caps, "--"]
        if _probe(_fill(launcher, probe_dir) + [executable, "-I", "-S", "-c", "pass"]) is not None:
            prefix, parts = launcher, [*parts, "uid 0 without capabilities"]
    return _Isolation(tuple(prefix), None, ", ".join([*parts, _LAYERS]))


def _probe_namespaces(probe_dir: str) -> tuple[list[str], list[str]]:
    """unshare with a read-only mount namespace if the host allows it, else without; else nothing."""
    unshare, sh = shutil.which("unshare"), shutil.which("sh")
    if not unshare:
        return [], []
    namespaces = [unshare, "--net", "--pid", "--ipc", "--fork", "--kill-child"]
    if sh:
        read_only = [*namespaces, "--mount", "--", sh, "-c", _READ_ONLY_MOUNTS, "sh", _SCRATCH]
        outside = os.path.join(tempfile.gettempdir(), f".axpo-sandbox-probe-{os.getpid()}")
        check = [sh, "-c", 'touch "$1/ok" && ! (: > "$2") 2>/dev/null', "sh", probe_dir, outside]
        works = _probe(_fill(read_only, probe_dir) + check) is not None
        if os.path.lexists(outside):
            os.unlink(outside)
        if works:
            return read_only, ["network/pid/ipc/mount namespaces with a read-only filesystem"]
    launcher = [*namespaces, "--", sh, "-c", _RUN_AS_CHILD, "sh"] if sh else [*namespaces, "--"]
    if _probe([*launcher, "true"]) is not None:
        return launcher, ["network/pid/ipc namespaces"]
    return [], []


def _probe_nobody(
    executable: str, prefix: list[str], no_caps: list[str], probe_dir: str
) -> tuple[list[str], tuple[int, int]] | None:
    """(launcher, (uid, gid)) to run as nobody, if nobody sees this very interpreter (a fallback to
    another stdlib would be fragile) and can reach the temp dir that holds the scratch dirs."""
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return None
    uid, gid = nobody.pw_uid, nobody.pw_gid
    launcher = [*prefix, no_caps[0], f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *no_caps[1:], "--"]
    code = (
        "import json, os, sys; print(json.dumps([sys.version, os.path.realpath(sys.base_prefix), "
        f"os.access({tempfile.gettempdir()!r}, os.X_OK)]))"
    )
    expected = _probe([executable, "-I", "-S", "-c", code])
    if expected is None or not json.loads(expected)[2]:
        return None
    os.chown(probe_dir, uid, gid)
    if _probe(_fill(launcher, probe_dir) + [executable, "-I", "-S", "-c", code]) != expected:
        return None
    return launcher, (uid, gid)


def _site_dirs() -> list[str]:
    """Where the worker finds PIL (and numpy etc.): this interpreter's site-packages, and wherever this
    process imported PIL from."""
    paths = sysconfig.get_paths()
    dirs = [os.path.dirname(os.path.dirname(Image.__file__)), *site.getsitepackages(), paths["purelib"]]
    out: list[str] = []
    for d in [*dirs, paths["platlib"]]:
        if os.path.isdir(d) and d not in out:
            out.append(d)
    return out


class _WorkerGone(Exception):
    """The worker closed its pipe or sent something that is not a protocol message."""


class _Timeout(Exception):
    pass


class Sandbox:
    """A persistent sandboxed Python interpreter, started lazily and restarted after a timeout or crash."""

    def __init__(
        self,
        *,
        timeout_s: float = 12.0,
        memory_mb: int = 1024,
        max_output_chars: int = 2000,
        cpu_time_s: int | None = None,
        max_file_mb: int = 64,
        python_executable: str | None = None,
    ):
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.max_output_chars = int(max_output_chars)
        self.cpu_time_s = (
            int(cpu_time_s) if cpu_time_s is not None else max(30, math.ceil(10 * self.timeout_s))
        )
        self.max_file_mb = int(max_file_mb)
        self.python_executable = python_executable or sys.executable
        self._proc: subprocess.Popen[bytes] | None = None
        self._base: Path | None = None
        self._image_paths: list[str] = []  # PNG files written so far, one per image, in order
        self._worker_images = 0  # how many of them the current worker has loaded
        self._worker_uid: int | None = None
        self._closed = False
        _LIVE.add(self)

    # ------------------------------------------------------------------ public

    @property
    def pid(self) -> int | None:
        """Pid (and process-group id) of the running worker's top process; None when none runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def worker_uid(self) -> int | None:
        """The uid the current worker runs as (65534 when it could be dropped to nobody)."""
        return self._worker_uid if self._proc is not None else None

    @property
    def scratch_dir(self) -> Path | None:
        return self._base / "work" if self._base is not None else None

    @property
    def isolation(self) -> str:
        """A description of the OS-level isolation workers get on this host."""
        return _isolation_for(self.python_executable).description

    def run(self, code: str, images: Sequence[Image.Image] = ()) -> RunResult:
        """Run `code` in the persistent interpreter. `images` is the rollout's full image list; images
        the worker has not seen yet are appended to its ``_pil_images``. Never raises for anything the
        code does; worker problems come back as error results."""
        if self._closed:
            return _error("python sandbox is closed", "Error: the python sandbox is closed.")
        try:
            self._write_images(images)
            if self._proc is None:
                self._start()
        except Exception as exc:  # noqa: BLE001 - reported to the model, logged for us
            logger.warning("python sandbox failed to start: %s", exc)
            self._kill()
            return _error(
                "python sandbox failed to start",
                "Error: the python tool is unavailable right now (the sandbox failed to start).",
            )
        request = {"code": code, "images": self._image_paths[self._worker_images :]}
        self._worker_images = len(self._image_paths)
        deadline = time.monotonic() + self.timeout_s
        try:
            self._send(request, deadline)
            reply = self._receive(deadline)
        except _Timeout:
            self._kill()
            return _error(
                f"python timed out after {self.timeout_s:g}s",
                f"Error: python timed out after {self.timeout_s:g}s. The Python session was "
                "restarted: variables from earlier calls are lost.",
            )
        except _WorkerGone:
            return self._report_crash()
        return self._format_reply(reply)

    def close(self) -> None:
        """Kill the worker and delete the scratch directory. Idempotent."""
        self._closed = True
        self._kill()
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
        _LIVE.discard(self)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    # ------------------------------------------------------------------ worker lifecycle

    def _make_dirs(self, isolation: _Isolation) -> Path:
        if self._base is None:
            base = Path(tempfile.mkdtemp(prefix="axpo-sandbox-"))
            (base / "work").mkdir()
            (base / "images").mkdir()
            base.chmod(0o711)  # the worker may run as nobody, or as root without CAP_DAC_OVERRIDE
            if isolation.run_as is not None:
                (base / "images").chmod(0o755)
                os.chown(base / "work", *isolation.run_as)
            self._base = base
        return self._base

    def _write_images(self, images: Sequence[Image.Image]) -> None:
        if len(images) <= len(self._image_paths):
            return
        base = self._make_dirs(_isolation_for(self.python_executable))
        for i in range(len(self._image_paths), len(images)):
            img = images[i]
            if img.mode not in _PNG_MODES:
                img = img.convert("RGB")
            path = base / "images" / f"{i}.png"
            img.save(path, format="PNG", compress_level=1)
            path.chmod(0o644)
            self._image_paths.append(str(path))

    def _start(self) -> None:
        isolation = _isolation_for(self.python_executable)
        base = self._make_dirs(isolation)
        scratch = base / "work"
        config = {
            "scratch": str(scratch),
            "site_dirs": _site_dirs(),
            "read_roots": [str(base / "images")],
            "memory_mb": self.memory_mb,
            "cpu_time_s": self.cpu_time_s,
            "max_file_mb": self.max_file_mb,
            "max_output_chars": self.max_output_chars,
            "alarm_s": math.ceil(self.timeout_s) + 5,
        }
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(scratch),
            "TMPDIR": str(scratch),
            "LANG": "C.UTF-8",
            "MPLCONFIGDIR": str(scratch),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "NUMEXPR_NUM_THREADS": "1",
        }
        cmd = [
            *_fill(isolation.prefix, str(scratch)),
            self.python_executable,
            "-I",
            "-S",
            "-B",
            "-c",
            _WORKER_BOOT,
            _WORKER_SOURCE,
            json.dumps(config),
        ]
        with open(base / "worker.log", "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=scratch,
                env=env,
                start_new_session=True,
                bufsize=0,
            )
        self._worker_images = 0
        try:
            ready = self._receive(time.monotonic() + _STARTUP_TIMEOUT_S)
        except (_Timeout, _WorkerGone) as exc:
            self._kill()
            log_tail = (base / "worker.log").read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"worker did not start ({type(exc).__name__}): {log_tail}") from None
        if ready.get("ready") is not True:
            self._kill()
            raise RuntimeError(f"unexpected first message from the worker: {ready!r}")
        self._worker_uid = ready.get("uid")

    def _kill(self) -> int | None:
        """Kill the worker and everything in its process group, reap it; returns the exit status of the
        top process (None if none ran)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            # With unshare on top, kill its child (the pid namespace's init) first: the kernel then kills
            # and reaps everything in the namespace and unshare reaps its child and exits, so nothing is
            # left to the host's init to reap.
            children = _children(proc.pid)
            for child in children:
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
            if children:
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    proc.kill()
        try:
            returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
            logger.error("python sandbox worker %d did not die", proc.pid)
            returncode = None
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        return returncode

    def _report_crash(self) -> RunResult:
        proc = self._proc
        returncode = None
        if proc is not None:
            try:  # give it a moment to finish dying so the exit status is known
                returncode = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        reason = _death_reason(returncode)
        return _error(
            f"python process died: {reason}",
            f"Error: the python process died ({reason}). The Python session was restarted: "
            "variables from earlier calls are lost.",
        )

    # ------------------------------------------------------------------ protocol

    def _send(self, message: dict, deadline: float) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        data = json.dumps(message).encode("utf-8")
        data = len(data).to_bytes(_HEADER_BYTES, "big") + data
        fd = self._proc.stdin.fileno()
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            events = poller.poll(max(1, int(remaining * 1000)))
            if not events:
                continue
            if events[0][1] & (select.POLLERR | select.POLLHUP):
                raise _WorkerGone
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
            except OSError as exc:  # EPIPE: the worker is gone
                raise _WorkerGone from exc

    def _receive(self, deadline: float) -> dict:
        header = self._read_exact(_HEADER_BYTES, deadline)
        size = int.from_bytes(header, "big")
        if size > _MAX_REPLY_BYTES:
            raise _WorkerGone
        try:
            message = json.loads(self._read_exact(size, deadline))
        except ValueError as exc:
            raise _WorkerGone from exc
        if not isinstance(message, dict):
            raise _WorkerGone
        return message

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            if not poller.poll(max(1, int(remaining * 1000))):
                continue
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise _WorkerGone
            buf += chunk
        return bytes(buf)

    def _format_reply(self, reply: dict) -> RunResult:
        output, total = reply.get("output"), reply.get("total")
        error, tb = reply.get("error"), reply.get("traceback")
        if not (
            isinstance(output, str)
            and isinstance(total, int)
            and isinstance(error, (str, type(None)))
            and isinstance(tb, (str, type(None)))
        ):
            self._kill()
            return _error(
                "python sandbox protocol error",
                "Error: the python process misbehaved and was restarted: variables from earlier "
                "calls are lost.",
            )
        output = _clean(output[: self.max_output_chars])
        if total > len(output):
            output += f"\n... [output truncated: {total - len(output)} more characters]"
        if error is None:
            return RunResult(output if output else "(no output; use print() to show values)")
        error = _clean(error)
        tb_lines = _clean(tb or "").rstrip("\n").splitlines()
        if tb_lines and tb_lines[-1].strip() == error.strip():
            tb_lines.pop()  # the traceback ends with the error line, which goes on top
        if error.startswith("MemoryError"):
            error += f" (the python sandbox is limited to {self.memory_mb} MB)"
        text = f"Error: {error}"
        tb = "\n".join(tb_lines)
        if tb.strip():
            if len(tb) > _MAX_TRACEBACK_CHARS:
                tb = "...\n" + tb[-_MAX_TRACEBACK_CHARS:]
            text += "\n" + tb
        if output:
            text += "\nOutput before the error:\n" + output
        return RunResult(text, error)


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _death_reason(returncode: int | None) -> str:
    """Why a worker died, from its exit status (negative: a signal; 128 + N: signal N as sh reports it)."""
    if returncode is None:
        return "it stopped responding"
    sig = -returncode if returncode < 0 else returncode - 128
    if sig <= 0 or sig not in signal.valid_signals():
        return f"it exited with code {returncode}"
    reasons = {
        signal.SIGXCPU: "it exceeded its CPU time limit",
        signal.SIGKILL: "it was killed (CPU time or memory limit)",
        signal.SIGALRM: "it ran past its time limit",
    }
    return reasons.get(sig, f"it crashed ({signal.Signals(sig).name})")


def _error(short: str, text: str) -> RunResult:
    return RunResult(text, short)


def _clean(text: str) -> str:
    """Replace lone surrogates (which cannot be encoded, hence not tokenized) with "?"."""
    return text.encode("utf-8", "replace").decode("utf-8")


@atexit.register
def _close_all() -> None:
    for sandbox in list(_LIVE):
        sandbox.close()

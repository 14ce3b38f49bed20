"""A sandboxed, persistent Python interpreter for the agent's ``python`` tool (DESIGN.md §3).

Why a subprocess: the model's code must not be able to hang, crash or exhaust the trainer, so it runs in
a separate interpreter (one per rollout) that we can kill at any time. The worker is a small
self-contained script run with ``python -I -S -B`` (no site, no user environment, no .pyc writes); it
does not import torch or transformers, so it starts in a few tens of milliseconds. Variables persist
across calls; the rollout's images are written as PNG files and loaded as ``_pil_images``; an optional
``preload`` source (documented helper functions) runs in the same namespace before the first call.

Protocol: 4-byte big-endian length + UTF-8 JSON, parent -> worker on the worker's stdin, worker ->
parent on its stdout. The worker moves both pipes to private descriptors and points fds 0 and 1 at
/dev/null before running user code; ``sys.stdout``/``sys.stderr`` are captured in memory (bounded), so
user prints never mix with the protocol. Every request carries an id that its reply must repeat.

What is enforced, layer by layer. The kernel layers (1-3) hold on their own, even against code that
disarms the audit hook (which deliberately adversarial code can do, e.g. through a traceback frame):

1. bubblewrap (Debian's ``bwrap``; ``make test`` and ``make run`` install it as root): new user, pid,
   network, ipc, uts and cgroup namespaces (no network but a private loopback, no view of or
   signals to host processes, a private /proc), no capabilities, ``no_new_privs``, and a new root
   filesystem that holds only /usr (and the /bin, /lib links), the interpreter's prefix, the given
   site-packages and the image folder, all read-only, /dev/null, zero, random and urandom, and the
   scratch dir (a tmpfs, see 6), the only writable place. The trainer's files (home, project,
   credentials, /etc, /tmp) do not exist in it, whatever uid the worker has; nor does /dev/shm, and the
   root is read-only, so no other tmpfs can be written. Needs bubblewrap 0.7 or later (``--size``).
2. A seccomp filter the worker installs on itself before any user code (a BPF program built here):
   fork, vfork, clone, clone3, execve and execveat fail with EPERM, so no process and no thread can
   ever start, by any route (``_posixsubprocess``, ctypes, native code); also socket, ptrace,
   process_vm_*, mount and namespace calls, bpf, perf_event_open, userfaultfd, io_uring, keyrings,
   kernel modules, kexec and the like; and every way to hold memory outside RLIMIT_AS: memfd_create,
   memfd_secret, System V shared memory, semaphores and message queues, POSIX message queues. Other
   architectures than the filter's are killed.
3. rlimits with soft == hard: RLIMIT_AS (``memory_mb``: large allocations raise MemoryError),
   RLIMIT_CPU (lifetime CPU seconds), RLIMIT_FSIZE (per file; SIGXFSZ ignored so writes fail with
   EFBIG), RLIMIT_NOFILE, RLIMIT_CORE = 0, RLIMIT_NPROC = 0.
4. An audit hook (``sys.addaudithook``), installed before user code: a tripwire that turns the usual
   attempts (sockets, processes, ``os.kill``, ctypes calls and dlopen, paths outside the scratch dir
   and the read-only roots, symlinks, special files, ``dir_fd``, sqlite files elsewhere, setrlimit,
   settrace, gc introspection, further audit hooks) into clear PermissionErrors for the model.
5. Wall-clock timeout per call: the parent SIGKILLs the sandbox's init (the kernel then kills
   everything in its pid namespace) and the next call starts a fresh worker; the worker also arms
   ``alarm(timeout + 5)`` as a backstop in case the parent died mid-call. A worker whose parent dies
   while idle sees EOF on its request pipe and exits. After each call the worker cancels interval
   timers and restores signal handlers, so no user code runs between calls.
6. A private scratch directory (the worker's cwd, HOME and TMPDIR) with a total quota: before any user
   code the worker enters a user and mount namespace of its own (mapping the trainer's uid back, then
   dropping every capability) and mounts a tmpfs there of ``scratch_mb`` and ``scratch_files`` inodes;
   writes past either fail with ENOSPC. Its files live as long as the worker (a restart loses them, as it
   loses variables) and never touch the host's disk; the kernel frees them when the worker dies.
   ``close()`` removes the host folder (images, log) without recursion, whatever its depth. An
   environment built from nothing (no trainer variables, single-threaded BLAS).

The memory a sandbox can hold is therefore bounded by ``memory_mb`` (the executor's address space; memfd
and shared memory refused by seccomp, /dev/shm absent) + ``scratch_mb`` (tmpfs pages are not in
RLIMIT_AS) + about 1 KiB of kernel memory per scratch inode (``scratch_files``), plus the kernel
buffers of at most 256 descriptors (pipes: measured 60 MB, where the kernel's pipe-user-pages-soft, 64 MiB
per user by default, stops them). No cgroup is needed, so no host delegation either.

The reply channel: the worker is two processes. The supervisor (pid 1 of the sandbox's namespaces; bwrap
runs with --as-pid-1, so no bwrap init holds the pipes there) keeps the parent's pipes, runs no user code,
is not dumpable (no process of its uid can open its /proc/<pid>/fd links or memory) and installs the same
limits and seccomp filter. The executor, forked before any limit, holds only its own pipe pair to the
supervisor and runs the user code. So the code cannot write to the reply channel. What it can shape is
the executor's reply to the current call, as it can shape its printed output: the supervisor relays one
well-formed, bounded reply per request, with the request's id, and answers anything else (a second frame,
garbage, another id) with a protocol error, after which the parent starts a fresh worker.

Where the host refuses bubblewrap, the seccomp filter or the scratch quota (a user namespace of the
worker's own), ``Sandbox.isolation`` says so and the sandbox refuses to start (every call returns an
error) unless it was made with ``allow_weaker=True``.

Known limits: the audit hook is a tripwire, not a boundary (tests/test_sandbox_escapes.py disarms it and
shows the kernel layers hold); no threads at all (libraries that insist on a thread pool fail; BLAS is
set to one thread); the worker runs as uid 0 (without capabilities) when the trainer is root, since what
it can see is bounded by the filesystem view rather than by file permissions. Linux only (x86_64 and
aarch64 for seccomp). A Sandbox is not thread-safe; use one per rollout.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import select
import shutil
import signal
import site
import struct
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
import ast, builtins, io, json, linecache, os, resource, select, signal, sys, traceback

HEADER = 4
MAX_REPLY_BYTES = 16 * 1024 * 1024
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
    cfg = json.loads(sys.argv[2])
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


main()
'''
_WORKER_BOOT = "import sys; exec(compile(sys.argv[1], '<sandbox-worker>', 'exec'))"
_MAX_PRELOAD_BYTES = 100_000  # it travels in argv, where one argument may hold at most 128 KiB


@dataclass(frozen=True)
class RunResult:
    """The outcome of one ``Sandbox.run``: ``text`` is what the model sees; it starts with "Error:" iff
    ``error`` (a short one-line description) is set."""

    text: str
    error: str | None = None


# ---------------------------------------------------------------------- seccomp

# Syscalls the worker may never make: (x86_64 number, aarch64 number); None where the call does not exist.
_DENIED_SYSCALLS: dict[str, tuple[int | None, int | None]] = {
    # new processes and threads, and running other programs
    "fork": (57, None), "vfork": (58, None), "clone": (56, 220), "clone3": (435, 435),
    "execve": (59, 221), "execveat": (322, 281),
    # other processes' memory, and the network (the audit hook reports socket attempts more clearly)
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438), "kcmp": (312, 272), "socket": (41, 198),
    # mounts and namespaces
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "open_tree": (428, 428), "move_mount": (429, 429),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442), "name_to_handle_at": (303, 264), "open_by_handle_at": (304, 265),
    # kernel attack surface nothing in a Python tool needs
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282), "keyctl": (250, 219),
    "add_key": (248, 217), "request_key": (249, 218), "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426), "io_uring_register": (427, 427), "personality": (135, 92),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "reboot": (169, 142), "swapon": (167, 224),
    "swapoff": (168, 225), "acct": (163, 89), "quotactl": (179, 60), "vhangup": (153, 58),
    "syslog": (103, 116), "mknod": (133, None), "mknodat": (259, 33), "uselib": (134, None),
    "iopl": (172, None), "ioperm": (173, None),
    # memory outside RLIMIT_AS: anonymous files, System V shared memory, semaphores and message queues
    # (the ipc namespace is private, but its default limits run to gigabytes), POSIX message queues
    "memfd_create": (319, 279), "memfd_secret": (447, 447), "shmget": (29, 194), "semget": (64, 190),
    "msgget": (68, 186), "mq_open": (240, 180),
}
_AUDIT_ARCH = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1)}  # AUDIT_ARCH_*, column above
_X32_SYSCALL_BIT = 0x40000000
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_SECCOMP_RET_KILL_PROCESS, _SECCOMP_RET_ERRNO, _SECCOMP_RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_EPERM = 1


def _seccomp_program(machine: str) -> bytes | None:
    """The worker's seccomp filter as a classic BPF program (struct sock_filter[]), or None for a machine
    this module has no syscall table for. Wrong-architecture calls kill the process; denied calls (and
    x32 calls on x86_64) fail with EPERM; everything else is allowed."""
    if machine not in _AUDIT_ARCH:
        return None
    arch, column = _AUDIT_ARCH[machine]
    numbers = sorted({nrs[column] for nrs in _DENIED_SYSCALLS.values() if nrs[column] is not None})

    def op(code: int, k: int, jump_true: int = 0, jump_false: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jump_true, jump_false, k)

    # seccomp_data: int nr at offset 0, u32 arch at offset 4. The last two instructions are ALLOW, DENY.
    checks = [(_BPF_JGE_K, _X32_SYSCALL_BIT)] if machine == "x86_64" else []
    checks += [(_BPF_JEQ_K, nr) for nr in numbers]
    program = [
        op(_BPF_LD_W_ABS, 4),
        op(_BPF_JEQ_K, arch, jump_true=1),
        op(_BPF_RET_K, _SECCOMP_RET_KILL_PROCESS),
        op(_BPF_LD_W_ABS, 0),
    ]
    for i, (code, k) in enumerate(checks):
        program.append(op(code, k, jump_true=len(checks) - i))  # to DENY, past the rest and ALLOW
    program += [op(_BPF_RET_K, _SECCOMP_RET_ALLOW), op(_BPF_RET_K, _SECCOMP_RET_ERRNO | _EPERM)]
    return b"".join(program)


_SECCOMP_PROGRAM = _seccomp_program(os.uname().machine)


# ---------------------------------------------------------------------- OS isolation (probed once)


@dataclass(frozen=True)
class _Interpreter:
    executable: str  # resolved: a venv's link need not resolve inside the sandbox's filesystem
    roots: tuple[str, ...]  # its prefixes and standard library, bound read-only


@dataclass(frozen=True)
class _Isolation:
    interpreter: _Interpreter
    bwrap: str | None  # bubblewrap, when it works on this host
    seccomp: bool  # whether the worker's seccomp filter takes hold here
    quota: bool  # whether the worker's scratch tmpfs (bytes and files bounded) is mounted here
    description: str
    missing: tuple[str, ...]  # what this host refused, each with the reason


_ISOLATION: dict[tuple[str, str | None], _Isolation] = {}
_ISOLATION_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[Sandbox] = weakref.WeakSet()
_REFUSALS_LOGGED: set[str] = set()
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
_BWRAP_ID = 1000  # the worker's uid and gid inside bwrap's user namespace, before private_scratch
_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",  # no threads can start in the sandbox: libraries must not try
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "ARROW_DEFAULT_MEMORY_POOL": "system",  # jemalloc would try to start a background thread
}


def _isolation_for(executable: str) -> _Isolation:
    """What isolation workers of `executable` get on this host (probed once per interpreter and bwrap)."""
    key = (executable, shutil.which("bwrap"))
    with _ISOLATION_LOCK:
        if key not in _ISOLATION:
            _ISOLATION[key] = _probe_isolation(executable, key[1])
            logger.info("python sandbox isolation: %s", _ISOLATION[key].description)
        return _ISOLATION[key]


def _interpreter(executable: str) -> _Interpreter:
    code = (
        "import json, os, sys; print(json.dumps([sys.executable, sys.base_prefix, sys.base_exec_prefix, "
        "os.path.dirname(os.__file__)]))"
    )
    try:
        done = subprocess.run(
            [executable, "-I", "-S", "-c", code], capture_output=True, timeout=_STARTUP_TIMEOUT_S,
            check=True, env=_ENV, cwd="/",
        )
        found = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"the python sandbox cannot run the interpreter {executable!r}: {exc}") from None
    roots = tuple(sorted({os.path.realpath(p) for p in found[1:]}))
    return _Interpreter(os.path.realpath(found[0] or executable), roots)


def _probe_isolation(executable: str, bwrap: str | None) -> _Isolation:
    interpreter = _interpreter(executable)
    missing: list[str] = []
    ready: dict | None = None
    if bwrap is None:
        missing.append(
            "filesystem and namespace isolation: bubblewrap (bwrap) is not installed; `make test` "
            "and `make run` install it when run as root, or run `apt-get install bubblewrap`"
        )
    else:
        ready, problem = _probe_worker(interpreter, bwrap)
        if ready is None:
            missing.append(f"filesystem and namespace isolation: bubblewrap fails on this host ({problem})")
            bwrap = None
    if ready is None:
        ready, problem = _probe_worker(interpreter, None)
        if ready is None:
            raise RuntimeError(f"the python sandbox worker does not start: {problem}")
    seccomp = ready.get("seccomp") == "on"
    if not seccomp:
        missing.append(f"seccomp filter (no process or thread creation): {ready.get('seccomp')}")
    quota = ready.get("quota") == "on"
    if not quota:
        missing.append(f"scratch quota (a tmpfs of its own, bytes and files bounded): {ready.get('quota')}")
    parts = []
    if bwrap:
        parts.append(
            "bubblewrap: user/pid/network/ipc/uts/cgroup namespaces, no capabilities, a read-only root "
            "of only /usr, the interpreter, its packages and the images, the scratch dir writable"
        )
    if seccomp:
        parts.append("seccomp: no fork/exec/threads/sockets/ptrace/mounts/memfd/shared memory")
    if quota:
        parts.append("scratch: a tmpfs bounded in bytes and files")
    uid = ready.get("uid")
    if uid == 0:
        # the user namespace of the scratch quota drops every capability too (private_scratch)
        dropped = bwrap or quota
        parts.append("uid 0 without capabilities" if dropped else "uid 0 WITH the trainer's capabilities")
    else:
        parts.append(f"uid {uid}")
    parts += ["rlimits", "audit hook"]
    description = ", ".join(parts)
    if missing:
        description += "; WEAKER than required, missing: " + "; ".join(missing)
    return _Isolation(interpreter, bwrap, seccomp, quota, description, tuple(missing))


def _probe_worker(interpreter: _Interpreter, bwrap: str | None) -> tuple[dict | None, str]:
    """Start one worker as a sandbox would and return its ready message (or None and why not)."""
    base = _make_base()
    proc = None
    try:
        proc = _spawn(interpreter, bwrap, base, _probe_config(base))
        return _await_ready(proc, base), ""
    except RuntimeError as exc:
        return None, str(exc)
    finally:
        if proc is not None:
            _kill_worker(proc)
        _remove_tree(base)


def _probe_config(base: Path) -> dict:
    return {
        "scratch": str(base / "work"), "read_roots": [str(base / "images")], "memory_mb": 1024,
        "cpu_time_s": 30, "max_file_mb": 1, "max_output_chars": 100, "alarm_s": 30, "preload": "",
        "scratch_bytes": 1024 * 1024, "scratch_inodes": 16,
    }


def _make_base() -> Path:
    """A fresh folder holding the scratch dir (``work``) and the images (``images``)."""
    base = Path(tempfile.mkdtemp(prefix="axpo-sandbox-"))
    (base / "work").mkdir()
    (base / "images").mkdir()
    return base


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_tree(path: Path) -> None:
    """Delete `path` and everything under it, whatever its depth or its names' lengths.

    Why not shutil.rmtree: it recurses once per level (RecursionError, which ``ignore_errors`` does not
    cover, at about 1,000 levels) and joins paths that outgrow PATH_MAX. Here the walk is a loop over a
    stack of names, every directory is opened relative to its parent's descriptor with O_NOFOLLOW (a
    symlink is removed, never followed), and at most two descriptors are open at a time. Directories the
    code made unreadable are given back their owner's permissions first. Only for trees nothing writes
    to any more (the worker is dead): ``..`` is taken to be the parent just left. OSError if a part could
    not be removed."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return
    except OSError:  # a symlink or another non-directory
        os.unlink(path)
        return
    pending = [_clear_directory(fd)]  # per open level: its subdirectories still to remove
    names: list[str] = []  # per level below the top: its name in its parent
    try:
        while True:
            if pending[-1]:
                name = pending[-1].pop()
                child = _open_subdirectory(fd, name)
                os.close(fd)
                fd = child
                names.append(name)
                pending.append(_clear_directory(fd))
                continue
            pending.pop()
            if not names:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _open_subdirectory(fd: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except PermissionError:  # mode 000 (matters where the trainer is not root)
        os.chmod(name, 0o700, dir_fd=fd)  # a directory a moment ago, and nothing renames it now
        return os.open(name, _DIR_FLAGS, dir_fd=fd)


def _clear_directory(fd: int) -> list[str]:
    """Unlink every entry of the directory `fd` that is not a directory; the names of those that are."""
    try:
        os.fchmod(fd, 0o700)  # unlinking needs write and search permission on the directory
    except OSError:
        pass  # not its owner: root, which needs neither
    subdirectories = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirectories.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirectories


def _outermost(paths: Sequence[str]) -> list[str]:
    """The resolved paths that are not inside another one of them (binding those covers the rest); never
    "/" itself, which would bind the whole host."""
    kept: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths if os.path.exists(p)}):
        if path != "/" and not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _bwrap_prefix(bwrap: str, read_only: Sequence[str], scratch: str, scratch_bytes: int) -> list[str]:
    """bwrap's arguments: fresh namespaces and a root filesystem of `read_only` (plus /usr and its
    companions) read-only and, at `scratch`, a tmpfs of `scratch_bytes`; nothing else of the host is
    visible, nothing but that tmpfs is writable."""
    # --as-pid-1: no bwrap init inside, which would hold the protocol pipes where the code could open them
    # (/proc/1/fd); the worker's supervisor is pid 1 instead.
    args = [bwrap, "--unshare-all", "--new-session", "--as-pid-1", "--cap-drop", "ALL"]
    # A uid other than 0 inside bwrap's user namespace: the worker maps the trainer's uid back in a
    # namespace of its own (private_scratch), and mapping uid 0 of the parent namespace needs CAP_SETFCAP.
    args += ["--uid", str(_BWRAP_ID), "--gid", str(_BWRAP_ID), "--hostname", "sandbox"]
    system = ["/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged /usr: keep the link, its target is bound
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            system.append(top)
    for path in _outermost([*system, *read_only]):
        args += ["--ro-bind", path, path]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # Never the host's folder: a bind has no total quota. The worker mounts its own tmpfs (bounded in files
    # too) on top; this one bounds the bytes should that fail where weaker isolation is allowed.
    args += ["--size", str(scratch_bytes), "--tmpfs", scratch]
    for device in _DEVICES:
        if os.path.exists(device):
            args += ["--dev-bind", device, device]
    # the root itself (a tmpfs holding the mount points) read-only last, so nothing but scratch is writable
    return [*args, "--proc", "/proc", "--remount-ro", "/", "--chdir", scratch]


def _site_dirs() -> list[str]:
    """Where the worker finds PIL (and numpy etc.): this interpreter's site-packages, and wherever this
    process imported PIL from."""
    paths = sysconfig.get_paths()
    dirs = [os.path.dirname(os.path.dirname(Image.__file__)), *site.getsitepackages(), paths["purelib"]]
    out: list[str] = []
    for d in [*dirs, paths["platlib"]]:
        d = os.path.realpath(d)
        if os.path.isdir(d) and d not in out:
            out.append(d)
    return out


def _spawn(interpreter: _Interpreter, bwrap: str | None, base: Path, config: dict) -> subprocess.Popen[bytes]:
    """Start a worker (under bubblewrap when given) in a new session; it still has to say it is ready."""
    scratch = config["scratch"]
    config = {
        **config,
        "site_dirs": _site_dirs(),
        "seccomp": _SECCOMP_PROGRAM.hex() if _SECCOMP_PROGRAM else "",
        "uid": os.getuid(),  # what the worker maps its own user namespace's user to (private_scratch)
        "gid": os.getgid(),
    }
    env = {**_ENV, "HOME": scratch, "TMPDIR": scratch, "MPLCONFIGDIR": scratch}
    prefix: list[str] = []
    if bwrap is not None:
        read_only = [*interpreter.roots, *config["site_dirs"], *config["read_roots"]]
        prefix = _bwrap_prefix(bwrap, read_only, scratch, config["scratch_bytes"])
    cmd = [*prefix, interpreter.executable, "-I", "-S", "-B", "-c", _WORKER_BOOT, _WORKER_SOURCE,
           json.dumps(config)]
    with open(base / "worker.log", "ab") as log:
        return subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=scratch, env=env,
            start_new_session=True, bufsize=0,
        )


def _await_ready(proc: subprocess.Popen[bytes], base: Path) -> dict:
    assert proc.stdout is not None
    try:
        ready = _receive(proc.stdout.fileno(), time.monotonic() + _STARTUP_TIMEOUT_S)
    except (_Timeout, _WorkerGone) as exc:
        _kill_worker(proc)
        log_tail = (base / "worker.log").read_bytes()[-2000:].decode(errors="replace").strip()
        raise RuntimeError(f"worker did not start ({type(exc).__name__}): {log_tail}") from None
    if ready.get("ready") is not True:
        raise RuntimeError(f"unexpected first message from the worker: {str(ready)[:200]}")
    return ready


def _kill_worker(proc: subprocess.Popen[bytes]) -> int | None:
    """Kill the worker and everything started with it, reap it; the exit status of the top process."""
    if proc.poll() is None:
        # With bwrap on top, kill its child (the pid namespace's init) first: the kernel then kills and
        # reaps everything in the namespace and bwrap exits, so nothing is left to the host's init to reap.
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


# ---------------------------------------------------------------------- protocol


class _WorkerGone(Exception):
    """The worker closed its pipe or sent something that is not a protocol message."""


class _Timeout(Exception):
    pass


def _send(fd: int, message: dict, deadline: float) -> None:
    data = json.dumps(message).encode("utf-8")
    data = len(data).to_bytes(_HEADER_BYTES, "big") + data
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


def _receive(fd: int, deadline: float) -> dict:
    size = int.from_bytes(_read_exact(fd, _HEADER_BYTES, deadline), "big")
    if size > _MAX_REPLY_BYTES:
        raise _WorkerGone
    try:
        message = json.loads(_read_exact(fd, size, deadline))
    except ValueError as exc:
        raise _WorkerGone from exc
    if not isinstance(message, dict):
        raise _WorkerGone
    return message


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
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


def _has_pending_data(fd: int) -> bool:
    """Whether the worker has written something nobody asked for (checked between calls)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(event & select.POLLIN for _, event in poller.poll(0))


class _Refused(Exception):
    """The host lacks a required isolation mechanism and the sandbox was not allowed to run weaker."""


_RESTARTED = "The Python session was restarted: variables from earlier calls are lost, and so are its files."


class Sandbox:
    """A persistent sandboxed Python interpreter, started lazily and restarted after a timeout or crash.

    ``allow_weaker``: start even where the host refuses bubblewrap or the seccomp filter (the isolation
    report then lists what is missing); by default such a sandbox refuses to run code. ``preload``:
    Python source run once in the user namespace of every worker (again after a restart), after
    ``_pil_images`` is set up and before the first user code, under the same restrictions."""

    def __init__(
        self,
        *,
        timeout_s: float = 12.0,
        memory_mb: int = 1024,
        max_output_chars: int = 2000,
        cpu_time_s: int | None = None,
        max_file_mb: int = 64,
        scratch_mb: int = 128,
        scratch_files: int = 10_000,
        python_executable: str | None = None,
        allow_weaker: bool = False,
        preload: str = "",
    ):
        if not isinstance(preload, str):
            raise TypeError(f"Sandbox(preload=...) must be Python source (str), not {type(preload).__name__}")
        if len(preload.encode("utf-8", "surrogatepass")) > _MAX_PRELOAD_BYTES:
            raise ValueError(f"Sandbox(preload=...) is longer than {_MAX_PRELOAD_BYTES} bytes")
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.max_output_chars = int(max_output_chars)
        self.cpu_time_s = (
            int(cpu_time_s) if cpu_time_s is not None else max(30, math.ceil(10 * self.timeout_s))
        )
        self.max_file_mb = int(max_file_mb)
        self.scratch_mb = int(scratch_mb)
        self.scratch_files = int(scratch_files)
        self.python_executable = python_executable or sys.executable
        self.allow_weaker = bool(allow_weaker)
        self.preload = preload
        self._proc: subprocess.Popen[bytes] | None = None
        self._base: Path | None = None
        self._image_paths: list[str] = []  # PNG files written so far, one per image, in order
        self._worker_images = 0  # how many of them the current worker has loaded
        self._worker_uid: int | None = None
        self._calls = 0  # request ids
        self._closed = False
        _LIVE.add(self)

    # ------------------------------------------------------------------ public

    @property
    def pid(self) -> int | None:
        """Pid (and process-group id) of the running worker's top process (bwrap, or the interpreter
        itself without it); None when none runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def worker_uid(self) -> int | None:
        """The uid the current worker runs as (as seen inside its namespaces)."""
        return self._worker_uid if self._proc is not None else None

    @property
    def scratch_dir(self) -> Path | None:
        """The worker's cwd. With the scratch quota in place the worker's files are in its own tmpfs
        there, out of the host's sight (the host's folder of that name stays empty)."""
        return self._base / "work" if self._base is not None else None

    @property
    def isolation(self) -> str:
        """A description of the OS-level isolation workers get on this host, naming what it refuses."""
        return _isolation_for(self.python_executable).description

    @property
    def refusal(self) -> str | None:
        """Why this sandbox will not run code on this host (a required mechanism is refused and
        ``allow_weaker`` is False); None when it will."""
        missing = _isolation_for(self.python_executable).missing
        if not missing or self.allow_weaker:
            return None
        return (
            "the python sandbox refuses to start with weaker isolation than required; this host lacks: "
            + "; ".join(missing)
            + " (allow_weaker=True, i.e. tools.python_allow_weak_isolation, runs it anyway)"
        )

    def run(self, code: str, images: Sequence[Image.Image] = ()) -> RunResult:
        """Run `code` in the persistent interpreter. `images` is the rollout's full image list; images
        the worker has not seen yet are appended to its ``_pil_images``. Never raises for anything the
        code does; worker problems come back as error results."""
        if self._closed:
            return _error("python sandbox is closed", "Error: the python sandbox is closed.")
        if self._proc is not None and self._proc.stdout and _has_pending_data(self._proc.stdout.fileno()):
            self._kill()
            return _error(
                "python sandbox protocol error",
                f"Error: the python process wrote outside its protocol and was restarted. {_RESTARTED}",
            )
        try:
            self._write_images(images)
            if self._proc is None:
                self._start()
        except _Refused as exc:
            if str(exc) not in _REFUSALS_LOGGED:  # once per process, not once per rollout
                _REFUSALS_LOGGED.add(str(exc))
                logger.error("%s", exc)
            return _error(
                "python sandbox refused: weaker isolation than required",
                "Error: the python tool is unavailable on this machine (its sandbox lacks required "
                "isolation).",
            )
        except Exception as exc:  # noqa: BLE001 - reported to the model, logged for us
            logger.warning("python sandbox failed to start: %s", exc)
            self._kill()
            return _error(
                "python sandbox failed to start",
                "Error: the python tool is unavailable right now (the sandbox failed to start).",
            )
        self._calls += 1
        request = {"id": self._calls, "code": code, "images": self._image_paths[self._worker_images :]}
        self._worker_images = len(self._image_paths)
        deadline = time.monotonic() + self.timeout_s
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        try:
            _send(self._proc.stdin.fileno(), request, deadline)
            reply = _receive(self._proc.stdout.fileno(), deadline)
        except _Timeout:
            self._kill()
            return _error(
                f"python timed out after {self.timeout_s:g}s",
                f"Error: python timed out after {self.timeout_s:g}s. {_RESTARTED}",
            )
        except _WorkerGone:
            return self._report_crash()
        return self._format_reply(reply, self._calls)

    def close(self) -> None:
        """Kill the worker and delete the scratch directory. Idempotent. An OSError means the folder could
        not be removed entirely (the worker is dead by then)."""
        self._closed = True
        _LIVE.discard(self)
        base, self._base = self._base, None
        try:
            self._kill()
        finally:
            if base is not None:
                _remove_tree(base)

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

    def _make_dirs(self) -> Path:
        if self._base is None:
            self._base = _make_base()
        return self._base

    def _write_images(self, images: Sequence[Image.Image]) -> None:
        if len(images) <= len(self._image_paths):
            return
        base = self._make_dirs()
        for i in range(len(self._image_paths), len(images)):
            img = images[i]
            if img.mode not in _PNG_MODES:
                img = img.convert("RGB")
            path = base / "images" / f"{i}.png"
            img.save(path, format="PNG", compress_level=1)
            self._image_paths.append(str(path))

    def _start(self) -> None:
        isolation = _isolation_for(self.python_executable)
        refusal = self.refusal
        if refusal is not None:
            raise _Refused(refusal)
        base = self._make_dirs()
        config = {
            "scratch": str(base / "work"),
            "read_roots": [str(base / "images")],
            "memory_mb": self.memory_mb,
            "cpu_time_s": self.cpu_time_s,
            "max_file_mb": self.max_file_mb,
            "scratch_bytes": self.scratch_mb * 1024 * 1024,
            "scratch_inodes": self.scratch_files,
            "max_output_chars": self.max_output_chars,
            "alarm_s": math.ceil(self.timeout_s) + 5,
            "preload": self.preload,
        }
        self._proc = _spawn(isolation.interpreter, isolation.bwrap, base, config)
        self._worker_images = 0
        ready = _await_ready(self._proc, base)
        if isolation.seccomp and ready.get("seccomp") != "on":
            self._kill()
            raise RuntimeError(f"the seccomp filter did not take hold in this worker: {ready.get('seccomp')}")
        if isolation.seccomp and ready.get("supervisor") != "on":
            self._kill()
            raise RuntimeError(f"the worker's supervisor is not protected: {ready.get('supervisor')}")
        if isolation.quota and ready.get("quota") != "on":
            self._kill()
            raise RuntimeError(f"the scratch quota did not take hold in this worker: {ready.get('quota')}")
        if ready.get("preload_error") is not None:
            self._kill()
            raise RuntimeError(f"the sandbox's preload code failed: {ready['preload_error']}")
        self._worker_uid = ready.get("uid")

    def _kill(self) -> int | None:
        """Kill the worker and everything it started, reap it; the exit status of its top process (None if
        none ran)."""
        proc, self._proc = self._proc, None
        return _kill_worker(proc) if proc is not None else None

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
            f"python process died: {reason}", f"Error: the python process died ({reason}). {_RESTARTED}"
        )

    def _format_reply(self, reply: dict, request_id: int) -> RunResult:
        if reply.get("protocol_error") is not None:  # the supervisor caught the executor forging
            self._kill()
            return _error(
                "python sandbox protocol error",
                f"Error: the python process wrote outside its protocol and was restarted. {_RESTARTED}",
            )
        output, total = reply.get("output"), reply.get("total")
        error, tb = reply.get("error"), reply.get("traceback")
        if not (
            reply.get("id") == request_id
            and isinstance(output, str)
            and isinstance(total, int)
            and isinstance(error, (str, type(None)))
            and isinstance(tb, (str, type(None)))
        ):
            self._kill()
            return _error(
                "python sandbox protocol error",
                f"Error: the python process misbehaved and was restarted. {_RESTARTED}",
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
        elif error.startswith("RuntimeError: can't start new thread"):
            error += " (threads are not available in the python sandbox)"
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

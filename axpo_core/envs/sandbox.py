"""A sandboxed, persistent Python interpreter for the agent's ``python`` tool (docs/design.md §3).

Why a subprocess: the model's code must not be able to hang, crash or exhaust the trainer, so it runs in
a separate interpreter (one per rollout) that we can kill at any time. The worker,
envs/sandbox_worker.py, is a self-contained script run by path with ``python -I -S -B`` (no site, no user
environment, no .pyc writes); it does not import torch or transformers, so it starts in a few tens of
milliseconds. Variables persist
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

Over 600 lines: the host probe, the seccomp program, the bubblewrap command and the tool session belong
together (each decides part of what the worker may do, and the escape tests read them as one boundary).
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

from axpo_core.envs import sandbox_worker

logger = logging.getLogger(__name__)

_HEADER_BYTES = 4
_MAX_REPLY_BYTES = 16 * 1024 * 1024
_MAX_TRACEBACK_CHARS = 1500
_STARTUP_TIMEOUT_S = 20.0
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})

# The worker program, run by path (envs/sandbox_worker.py: standard library only); imported here for its path
# alone, so that its source is part of this module's import closure (tasks/persistence.py's code digest).
_WORKER_PATH = os.path.abspath(sandbox_worker.__file__)
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
            "of only /usr, the interpreter, its packages, the worker program and the images, the scratch dir "
            "writable"
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
        read_only = [*interpreter.roots, *config["site_dirs"], *config["read_roots"], _WORKER_PATH]
        prefix = _bwrap_prefix(bwrap, read_only, scratch, config["scratch_bytes"])
    cmd = [*prefix, interpreter.executable, "-I", "-S", "-B", _WORKER_PATH, json.dumps(config)]
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

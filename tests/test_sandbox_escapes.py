"""The python sandbox under attack (issue 12): every escape that was found, and every one that was
already blocked, is a test that asserts it stays blocked.

Most attacks run twice: as plain user code (the audit hook answers first, with a clear message), and
after the code has disarmed the audit hook through a traceback frame (``DISARM``), as a deliberate
attacker would. The second run shows that the kernel layers (bubblewrap, seccomp, rlimits) hold on their
own. Real worker processes throughout; the sandbox refuses to run where the host lacks a required
mechanism, and then these tests are skipped with the reason (test_sandbox.py checks that a root host with
bubblewrap, as CI is after `make test`, gets every layer).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sandbox import sandbox_processes as process_tree  # the sandbox's whole process tree

from axpo_core.envs.sandbox import Sandbox

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
MARK = "HOOK-DISARMED"

# Disarm the audit hook from user code: the PermissionError it raises carries the hook's frames, whose
# locals lead to its handler table and to `deny`; make `deny` a no-op and empty the table.
DISARM = f'''
def _disarm():
    if globals().get("_HOOK_DISARMED"):  # by an earlier call of this session
        return True
    try:
        open("/etc/hostname")
    except PermissionError as exc:
        tb = exc.__traceback__
        while tb is not None:
            get_handler = tb.tb_frame.f_locals.get("get_handler")
            if get_handler is not None:
                handlers = get_handler.__self__
                for cell in handlers["open"].__closure__:
                    if getattr(cell.cell_contents, "__name__", "") == "deny":
                        def outer():
                            _PermissionError = None
                            def quiet(message):
                                return _PermissionError
                            return quiet
                        cell.cell_contents.__code__ = outer().__code__
                handlers.clear()
                globals()["_HOOK_DISARMED"] = True
                return True
            tb = tb.tb_next
    return False
assert _disarm(), "the attack could not disarm the audit hook"
print({MARK!r})
'''

# The escape found in issue 12: _posixsubprocess loaded a second time under another package name (so the
# hook's import check and the stub it put in place do not apply), then fork_exec of /bin/sh.
REIMPORTED_FORK_EXEC = '''
import os, sys
from importlib import machinery, util
origin = sys.modules["_posixsubprocess"].__spec__.origin
loader = machinery.ExtensionFileLoader("x._posixsubprocess", origin)
fresh = util.module_from_spec(util.spec_from_file_location("x._posixsubprocess", origin, loader=loader))
out_r, out_w = os.pipe()
err_r, err_w = os.pipe()
pid = fresh.fork_exec([b"/bin/sh", b"-c", b"id; cat {secret}"], [b"/bin/sh"], True, (out_w, err_w), None,
                      None, -1, -1, -1, out_w, -1, out_w, err_r, err_w, True, False, -1, None, None, None,
                      -1, None, False)
os.close(out_w)
print("child", pid, os.read(out_r, 100000))
'''


def prelude(disarmed: bool) -> str:
    return DISARM if disarmed else ""


def check_disarmed(result, disarmed: bool) -> None:
    assert (MARK in result.text) == disarmed, result.text


ARMED_AND_DISARMED = pytest.mark.parametrize("disarmed", [False, True], ids=["hook", "hook-disarmed"])


@pytest.fixture
def sandbox():
    sb = Sandbox(timeout_s=3.0, memory_mb=1024, max_output_chars=2000)
    if sb.refusal is not None:
        pytest.skip(sb.refusal)
    yield sb
    sb.close()


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    """A 0600 credentials file of the trainer's user, outside the scratch dir."""
    path = tmp_path / ".aws" / "credentials"
    path.parent.mkdir()
    path.write_text(f"[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = {SECRET}\n")
    path.chmod(0o600)
    return path


def threads_per_process(pid: int) -> dict[int, int]:
    return {p: len(os.listdir(f"/proc/{p}/task")) for p in process_tree(pid)}


def cpu_ticks(pid: int) -> int:
    """utime + stime of the sandbox's processes (clock ticks): a count, not a time we compare to a bound."""
    total = 0
    for p in process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


# ---------------------------------------------------------------------- processes


@ARMED_AND_DISARMED
def test_reimported_fork_exec_cannot_start_a_shell(sandbox, credentials, disarmed):
    assert sandbox.run("x = 1").error is None
    before = process_tree(sandbox.pid)
    result = sandbox.run(prelude(disarmed) + REIMPORTED_FORK_EXEC.format(secret=credentials))
    check_disarmed(result, disarmed)
    assert result.error == "PermissionError: [Errno 1] Operation not permitted", result.text
    assert SECRET not in result.text and "uid=" not in result.text
    assert process_tree(sandbox.pid) == before  # no child, not even for a moment that outlived the call
    assert sandbox.run("print(x)").text == "1\n"  # the session survives the attempt


@ARMED_AND_DISARMED
def test_bounded_fork_bomb_starts_no_child(sandbox, disarmed):
    assert sandbox.run("x = 1").error is None
    before = process_tree(sandbox.pid)
    code = prelude(disarmed) + (
        "import os, time\nstarted = refused = 0\nfor _ in range(30):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        refused += 1\n        continue\n    if pid == 0:\n"
        "        time.sleep(60)\n        os._exit(0)\n    started += 1\n"
        "print('started', started, 'refused', refused)"
    )
    result = sandbox.run(code)
    check_disarmed(result, disarmed)
    assert "started 0 refused 30" in result.text, result.text
    assert process_tree(sandbox.pid) == before
    assert sandbox.run("print(x)").text == "1\n"


SHELL = "os.execv('/bin/sh', ['sh', '-c', 'id > spawned.txt'])"
EXEC_ROUTES = {  # each would leave spawned.txt in the scratch dir (the child's cwd) if a shell ran
    "os.system": "status = os.system('id > spawned.txt')\nassert status == 0, f'os.system returned {status}'",
    "os.execv": SHELL,
    "os.posix_spawn": "os.posix_spawn('/bin/sh', ['sh', '-c', 'id > spawned.txt'], {})",
    "os.spawnv": "os.spawnv(os.P_WAIT, '/bin/sh', ['sh', '-c', 'id > spawned.txt'])",
    "subprocess.run": "subprocess.run(['/bin/sh', '-c', 'id > spawned.txt'])",
    "pty.fork": f"pid, _ = pty.fork()\nif pid == 0:\n    {SHELL}",
    "os.forkpty": f"pid, _ = os.forkpty()\nif pid == 0:\n    {SHELL}",
    "multiprocessing": "multiprocessing.get_context('fork').Process(target=print).start()",
    "concurrent.futures": "concurrent.futures.ProcessPoolExecutor(1).submit(print).result(timeout=2)",
}


@ARMED_AND_DISARMED
@pytest.mark.parametrize("route", sorted(EXEC_ROUTES))
def test_no_process_by_any_stdlib_route(sandbox, route, disarmed):
    assert sandbox.run("x = 1").error is None
    before = process_tree(sandbox.pid)
    code = (
        prelude(disarmed)
        + "import os, pty, subprocess, multiprocessing, concurrent.futures\n"
        + f"{EXEC_ROUTES[route]}\nprint('SPAWNED')"
    )
    result = sandbox.run(code)
    check_disarmed(result, disarmed)
    assert result.error is not None and "SPAWNED" not in result.text, result.text
    assert process_tree(sandbox.pid) == before
    assert sandbox.run("print(x)").text == "1\n"  # the same worker, so the same scratch files:
    assert sandbox.run("import os\nos.path.exists('spawned.txt')").text == "False\n"


def test_native_code_cannot_fork_exec_or_leave_its_namespaces(sandbox):
    armed = sandbox.run("import ctypes\nctypes.CDLL('libc.so.6')")
    assert armed.error is not None and "loading native libraries is not allowed" in armed.text
    code = DISARM + (
        "import ctypes\nlibc = ctypes.CDLL('libc.so.6', use_errno=True)\nresults = {}\n"
        "def attempt(name, call):\n    ctypes.set_errno(0)\n"
        "    results[name] = (call(), ctypes.get_errno())\n"
        "attempt('fork', libc.fork)\n"
        "attempt('clone', lambda: libc.syscall(56, 17, 0, 0, 0, 0))\n"  # SIGCHLD: a plain fork
        "attempt('execve', lambda: libc.execve(b'/bin/sh', None, None))\n"
        "attempt('unshare', lambda: libc.unshare(0x10000000))\n"  # CLONE_NEWUSER
        "attempt('mount', lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\n"
        "attempt('ptrace', lambda: libc.ptrace(16, 1, None, None))\n"  # PTRACE_ATTACH to the namespace's init
        "attempt('socket', lambda: libc.socket(2, 1, 0))\n"
        "print(results)"
    )
    result = sandbox.run(code)
    assert result.error is None, result.text
    results = eval(result.text.replace(MARK, "").strip())  # noqa: S307 - our own repr of a dict of tuples
    assert results == {name: (-1, 1) for name in results} and len(results) == 7, results


# ---------------------------------------------------------------------- the trainer's files and secrets


@ARMED_AND_DISARMED
def test_credentials_file_outside_scratch_cannot_be_read(sandbox, credentials, disarmed):
    reads = {
        "open": f"open({str(credentials)!r}).read()",
        "os.open": f"os.read(os.open({str(credentials)!r}, os.O_RDONLY), 1000)",
        "pathlib": f"pathlib.Path({str(credentials)!r}).read_text()",
        "numpy": f"numpy.fromfile({str(credentials)!r}, dtype='uint8').tobytes()",
        "io.open_code": f"io.open_code({str(credentials)!r}).read()",
        "listdir": f"os.listdir({str(credentials.parent)!r})",
    }
    for name, expression in reads.items():
        result = sandbox.run(prelude(disarmed) + f"import io, os, pathlib, numpy\nprint({expression})")
        check_disarmed(result, disarmed)
        assert result.error is not None and SECRET not in result.text, (name, result.text)
        expected = "is not allowed" if not disarmed else "No such file or directory"
        assert expected in result.text, (name, result.text)


def test_only_the_sandbox_filesystem_is_visible(sandbox):
    repo_marker = Path(__file__).resolve().parents[1] / "pyproject.toml"
    code = DISARM + (
        "import os\nprint(sorted(os.listdir('/etc')), sorted(os.listdir('/dev')))\n"
        f"print(os.path.exists({str(repo_marker)!r}), os.path.exists({os.path.expanduser('~/.aws')!r}))\n"
        f"print(os.path.exists('/proc/{os.getpid()}'))\n"
        "try:\n    print(sorted(os.listdir('/proc/1/root/etc')))\n"
        "except OSError as exc:\n    print(exc.errno)"
    )
    result = sandbox.run(code)
    assert result.error is None, result.text
    lines = result.text.replace(MARK, "").strip().splitlines()
    assert lines[0] == "['ld.so.cache'] ['null', 'random', 'urandom', 'zero']", lines
    assert lines[1] == "False False"  # not the project, not the trainer's home
    assert lines[2] == "False"  # not the trainer's process
    assert lines[3] in ("['ld.so.cache']", "13")  # the namespace's init has the same root (or is closed)


def test_environment_holds_no_trainer_secret(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with Sandbox() as sb:
        if sb.refusal is not None:
            pytest.skip(sb.refusal)
        code = DISARM + (
            "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())\n"
            "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
            "    try:\n        print(pid, open(f'/proc/{pid}/environ').read())\n"
            "    except PermissionError:  # the supervisor is not dumpable\n"
            "        print(pid, 'unreadable')\n"
            f"print(os.path.exists('/proc/{os.getpid()}/environ'))"
        )
        result = sb.run(code)
        assert result.error is None, result.text
        assert SECRET not in result.text and "AWS_SECRET" not in result.text and "HF_TOKEN" not in result.text
        assert result.text.rstrip().endswith("False")


# ---------------------------------------------------------------------- threads and code between calls


@ARMED_AND_DISARMED
def test_no_thread_outlives_a_call(sandbox, disarmed):
    code = prelude(disarmed) + (
        "import threading, _thread\ndef burn():\n    while True:\n        pass\n"
        "try:\n    _thread.start_new_thread(burn, ())\n"
        "except RuntimeError as exc:\n    print('low-level:', exc)\n"
        "threading.Thread(target=burn, daemon=True).start()"
    )
    result = sandbox.run(code)
    check_disarmed(result, disarmed)
    assert "low-level: can't start new thread" in result.text
    assert result.error == (
        "RuntimeError: can't start new thread (threads are not available in the python sandbox)"
    )
    threads = threads_per_process(sandbox.pid)
    assert set(threads.values()) == {1}, threads  # bwrap, the supervisor and the executor: one each
    ticks = cpu_ticks(sandbox.pid)
    time.sleep(0.3)  # a burning thread would accrue ~30 ticks here; the idle worker none
    assert cpu_ticks(sandbox.pid) - ticks <= 1  # (one for the worker finishing its reply)
    assert sandbox.run("print('alive')").text == "alive\n"


@ARMED_AND_DISARMED
def test_no_signal_handler_runs_between_calls(sandbox, disarmed):
    code = prelude(disarmed) + (
        "import signal\nticks = []\nsignal.signal(signal.SIGALRM, lambda *a: ticks.append(1))\n"
        "signal.signal(signal.SIGPROF, lambda *a: ticks.append(1))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)\nsignal.setitimer(signal.ITIMER_PROF, 0.01, 0.01)\n"
        "seen = len(ticks)"
    )
    result = sandbox.run(code)
    check_disarmed(result, disarmed)
    assert result.error is None, result.text
    time.sleep(0.3)  # ~30 timer ticks if the timer were still armed
    after = sandbox.run("len(ticks) - seen, signal.getsignal(signal.SIGALRM) is signal.SIG_DFL")
    assert after.text == "(0, True)\n"  # no tick since the call ended, and the handler is gone


# ---------------------------------------------------------------------- the reply channel

FORGERIES = {
    "same id": 'request["id"]',
    "next id": 'request["id"] + 1',
    "old id": 'request["id"] - 1',
}


@ARMED_AND_DISARMED
@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_forged_reply_cannot_desynchronise_later_calls(sandbox, forgery, disarmed):
    assert sandbox.run("x = 1").text.startswith("(no output")
    code = prelude(disarmed) + (
        "import json, os, sys\nrequest = sys._getframe(1).f_locals['request']  # the worker's own frame\n"
        f"frame = json.dumps({{'id': {FORGERIES[forgery]}, 'output': 'FORGED\\n', 'total': 7, 'error': None, "
        "'traceback': None}).encode()\n"
        "for fd in range(3, 32):  # the reply pipe is one of these\n"
        "    try:\n        os.write(fd, len(frame).to_bytes(4, 'big') + frame + b'\\0\\0\\0\\3xyz')\n"
        "    except OSError:\n        pass\nprint('genuine')"
    )
    first = sandbox.run(code)
    # The forged frame reaches the supervisor, not the parent. It may pass as the forger's own reply (if the
    # genuine one is not written yet when the supervisor looks for more bytes): that is output the code
    # chose, as print would be. Otherwise, or at the latest with the next call, it is a protocol error.
    assert first.text in ("FORGED\n",) or first.error == "python sandbox protocol error", first
    later = [sandbox.run(f"print({n})") for n in (2, 3, 4)]
    for n, result in zip((2, 3, 4), later, strict=True):
        assert "FORGED" not in result.text and "genuine" not in result.text, (n, result)
        assert result.text == f"{n}\n" or result.error == "python sandbox protocol error", (n, result)
    assert [r.text for r in later[1:]] == ["3\n", "4\n"]  # at most one call pays for the forgery
    assert "variables from earlier calls are lost" in "".join(r.text for r in [first, *later])


def test_the_code_cannot_reach_the_reply_pipe(sandbox):
    """The user code runs in the executor, a child of the worker's supervisor. It holds only its own pipe
    pair, and the supervisor, which holds the parent's pipes, is not dumpable, so no /proc/<pid>/fd link
    reopens them (nor does a bwrap init: the supervisor is pid 1). Every pipe the code can open is listed."""
    sandbox.run("1")
    assert sandbox._proc is not None
    parent = {os.fstat(f.fileno()).st_ino for f in (sandbox._proc.stdin, sandbox._proc.stdout)}
    code = DISARM + (
        "import os, stat\nopened, refused = set(), 0\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['self', 'thread-self']:\n"
        "    try:\n        fds = os.listdir(f'/proc/{pid}/fd')\n    except OSError:\n        continue\n"
        "    for fd in fds:\n"
        "        for mode in (os.O_WRONLY, os.O_RDONLY):\n"
        "            try:\n                new = os.open(f'/proc/{pid}/fd/{fd}', mode | os.O_NONBLOCK)\n"
        "            except OSError:\n                refused += 1\n                continue\n"
        "            info = os.fstat(new)\n            os.close(new)\n"
        "            if stat.S_ISFIFO(info.st_mode):\n                opened.add(info.st_ino)\n"
        "print(sorted(opened), refused)"
    )
    result = sandbox.run(code)
    assert result.error is None, result.text
    opened, refused = result.text.replace(MARK, "").split("]")
    pipes = {int(n) for n in opened.strip(" [\n").split(",") if n.strip()}
    assert len(pipes) == 2 and int(refused) > 0  # its own pair opens, the supervisor's descriptors do not
    assert not pipes & parent
    assert sandbox.run("print('still in step')").text == "still in step\n"


# ---------------------------------------------------------------------- what was already blocked


@ARMED_AND_DISARMED
def test_network_is_unreachable(sandbox, disarmed):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    try:
        for attempt in (
            f"socket.create_connection(('127.0.0.1', {port}), timeout=1)",
            "socket.getaddrinfo('example.com', 80)",
            "socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
        ):
            result = sandbox.run(prelude(disarmed) + f"import socket\n{attempt}\nprint('CONNECTED')")
            check_disarmed(result, disarmed)
            assert result.error is not None and "CONNECTED" not in result.text, (attempt, result.text)
            if not disarmed:
                assert "network access is not allowed" in result.text
        assert select.select([listener], [], [], 0)[0] == []  # nobody knocked on the trainer's port
    finally:
        listener.close()


@ARMED_AND_DISARMED
def test_writes_outside_scratch_fail(sandbox, tmp_path, disarmed):
    targets = [tmp_path / "escaped.txt", Path("/usr/axpo-escaped.txt"), Path("/tmp/axpo-escaped.txt"),
               Path("/axpo-escaped.txt"), Path(sys.prefix) / "axpo-escaped.txt"]
    for target in targets:
        result = sandbox.run(prelude(disarmed) + f"open({str(target)!r}, 'w').write('x')")
        check_disarmed(result, disarmed)
        assert result.error is not None, (target, result.text)
        assert not target.exists(), target
    inside = sandbox.run(prelude(disarmed) + "open('ok.txt', 'w').write('ok')")
    assert inside.error is None and sandbox.run("open('ok.txt').read()").text == "'ok'\n"


@ARMED_AND_DISARMED
def test_host_processes_cannot_be_signalled(sandbox, disarmed):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for attempt in (f"os.kill({victim.pid}, signal.SIGKILL)", f"os.killpg({victim.pid}, signal.SIGKILL)",
                        f"signal.pidfd_send_signal(os.pidfd_open({victim.pid}), signal.SIGKILL)"):
            result = sandbox.run(prelude(disarmed) + f"import os, signal\n{attempt}")
            check_disarmed(result, disarmed)
            assert result.error is not None, (attempt, result.text)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


@ARMED_AND_DISARMED
def test_memory_limit_cannot_be_lifted(sandbox, disarmed):
    code = prelude(disarmed) + (
        "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
        "except (ValueError, OSError, PermissionError) as exc:\n    print('setrlimit refused')\n"
        "x = bytearray(4 * 1024**3)"
    )
    result = sandbox.run(code)
    check_disarmed(result, disarmed)
    assert "setrlimit refused" in result.text
    assert result.error is not None and result.error.startswith("MemoryError"), result.text
    assert sandbox.run("print('alive')").text == "alive\n"


@ARMED_AND_DISARMED
def test_timeout_holds_even_with_the_alarm_ignored(disarmed):
    with Sandbox(timeout_s=1.0) as sb:
        if sb.refusal is not None:
            pytest.skip(sb.refusal)
        assert sb.run("x = 1").error is None
        tree = process_tree(sb.pid)
        code = prelude(disarmed) + (
            "import signal\nfor sig in (signal.SIGALRM, signal.SIGXCPU, signal.SIGTERM):\n"
            "    signal.signal(sig, signal.SIG_IGN)\nwhile True:\n    pass"
        )
        result = sb.run(code)
        assert result.error == "python timed out after 1s", result.text
        assert [p for p in tree if process_tree(p)] == []  # every process of that sandbox is gone
        assert sb.run("print('fresh')").text == "fresh\n"


@ARMED_AND_DISARMED
def test_100_mb_of_output_stays_bounded(disarmed):
    with Sandbox(max_output_chars=500, max_file_mb=1) as sb:
        if sb.refusal is not None:
            pytest.skip(sb.refusal)
        result = sb.run(prelude(disarmed) + "print('x' * 100_000_000)")
        assert result.error is None and len(result.text) < 700
        assert "more characters]" in result.text
        # straight to the inherited stderr (the worker log on the trainer's disk): capped by RLIMIT_FSIZE
        result = sb.run(prelude(disarmed) + (
            "import os\nchunk = b'y' * (1 << 20)\nwritten = 0\ntry:\n"
            "    for _ in range(100):\n        written += os.write(2, chunk)\nexcept OSError as exc:\n"
            "    print('stopped:', exc.errno)\nprint(written)"
        ))
        assert "stopped: 27" in result.text, result.text  # EFBIG
        assert sb.scratch_dir is not None
        assert (sb.scratch_dir.parent / "worker.log").stat().st_size <= 1024 * 1024



# ---------------------------------------------------------------------- memory and disk (issue 27)

# The call: ~1,200 levels, past shutil.rmtree's recursion limit. With the hook armed its path
# checks make it take minutes, so the attack disarms it first (as a deliberate attacker would).
DEEP_TREE = (
    "import os\nfor _ in range(4): os.makedirs('d/'*300); os.chdir('d/'*300)\n"
    "print('depth', os.getcwd().count('/d'))"
)
MEMFD_60MB = "import os\nfd = os.memfd_create('hoard')\nos.write(fd, b'x' * (60 << 20))\nprint('HELD')"
DEV_SHM = "open('/dev/shm/axpo-hoard', 'wb').write(b'x' * (60 << 20))\nprint('HELD')"
FILL_SCRATCH = (  # small files until the disk says no: how many, and how much they hold
    "import os\nn = 0\ntry:\n    while True:\n        with open(f'part{n}', 'wb') as f:\n"
    "            f.write(os.urandom(1 << 20))\n        n += 1\nexcept OSError as exc:\n"
    "    print('stopped', exc.errno, 'after', n, 'MB')"
)
HUGE_ERROR = "{}['C' * 5_000_000]"
ENOSPC = 28


def _ctypes_attempts(calls: dict[str, str]) -> str:
    """Code (run after DISARM) that makes each libc call and prints {name: (result, errno)}."""
    lines = ["import ctypes", "libc = ctypes.CDLL(None, use_errno=True)", "results = {}"]
    for name, call in calls.items():
        lines += ["ctypes.set_errno(0)", f"results[{name!r}] = ({call}, ctypes.get_errno())"]
    return "\n".join([*lines, "print(results)"])


def test_memory_outside_the_address_space_limit_is_refused_by_the_kernel(sandbox):
    """memfd, System V and POSIX shared memory, semaphore sets and message queues: seccomp answers EPERM
    to every one, with the audit hook disarmed and libc called directly."""
    calls = {
        "memfd_create": "libc.memfd_create(b'hoard', 0)",
        "memfd_secret": "libc.syscall(447, 0)",
        "shmget": "libc.shmget(0, 60 << 20, 0o1600)",  # IPC_PRIVATE, IPC_CREAT | 0600
        "semget": "libc.semget(0, 32000, 0o1600)",
        "msgget": "libc.msgget(0, 0o1600)",
        "mq_open": "libc.mq_open(b'/hoard', 0o102, 0o600, None)",  # O_CREAT | O_RDWR
    }
    result = sandbox.run(DISARM + _ctypes_attempts(calls))
    assert result.error is None, result.text
    results = eval(result.text.replace(MARK, "").strip())  # noqa: S307 - our own repr of a dict of tuples
    assert results == {name: (-1, 1) for name in calls}, results  # -1, EPERM
    assert sandbox.run("print('alive')").text == "alive\n"


@ARMED_AND_DISARMED
def test_memfd_create_fails_with_a_clear_error(sandbox, disarmed):
    result = sandbox.run(prelude(disarmed) + MEMFD_60MB)
    check_disarmed(result, disarmed)
    assert "HELD" not in result.text and result.error is not None
    assert result.error.startswith("PermissionError: memfd_create is not allowed in the sandbox"), result.text


@ARMED_AND_DISARMED
def test_shared_memory_files_cannot_be_written(sandbox, disarmed):
    """/dev/shm does not exist in the sandbox and its root is read-only: no tmpfs but the scratch quota."""
    before = set(os.listdir("/dev/shm"))
    attempts = {
        "/dev/shm": DEV_SHM,
        "shared_memory": "from multiprocessing import shared_memory\n"
        "shared_memory.SharedMemory(create=True, size=60 << 20)\nprint('HELD')",
        "root tmpfs": "open('/axpo-hoard', 'wb').write(b'x' * (60 << 20))\nprint('HELD')",
    }
    for name, code in attempts.items():
        result = sandbox.run(prelude(disarmed) + code)
        check_disarmed(result, disarmed)
        assert result.error is not None and "HELD" not in result.text, (name, result.text)
        if disarmed:  # the kernel's answer: no such folder, or a read-only file system
            assert any(e in result.error for e in ("No such file", "Read-only file system")), (name, result)
    assert set(os.listdir("/dev/shm")) - before == set()


@ARMED_AND_DISARMED
def test_scratch_has_a_total_quota_in_bytes_and_files(disarmed):
    with Sandbox(timeout_s=10.0, scratch_mb=8, scratch_files=50, max_file_mb=64) as sb:
        if sb.refusal is not None:
            pytest.skip(sb.refusal)
        result = sb.run(prelude(disarmed) + FILL_SCRATCH)  # 1 MB files, each under RLIMIT_FSIZE
        check_disarmed(result, disarmed)
        assert f"stopped {ENOSPC} after" in result.text, result.text
        assert int(result.text.split("after")[1].split()[0]) <= 8
        # a file deleted while open still holds its pages: it counts as well
        held_open = sb.run(
            "import glob, os\nfor p in glob.glob('part*'):\n    os.remove(p)\n"
            "f = open('ghost', 'wb')\nos.remove('ghost')\nf.write(os.urandom(6 << 20))\nf.flush()\n"
            "open('more', 'wb').write(os.urandom(4 << 20))"
        )
        assert held_open.error is not None and "No space left on device" in held_open.error, held_open.text
        files = sb.run(
            "import os\nn = 0\ntry:\n    for i in range(1000):\n        os.mkdir(f'dir{i}')\n        n += 1\n"
            "except OSError as exc:\n    print('stopped', exc.errno, 'after', n)"
        )
        assert f"stopped {ENOSPC} after" in files.text and int(files.text.split()[-1]) < 50, files.text
        assert sb.scratch_dir is not None and list(sb.scratch_dir.iterdir()) == []  # nothing on the host


def test_the_scratch_namespace_leaves_no_capability(sandbox):
    """The worker's own user namespace (where it mounts the scratch tmpfs) grants every capability in it;
    all are dropped before user code, the bounding set too, and the quota cannot be remounted larger."""
    code = DISARM + (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')])\n"
        "ctypes.set_errno(0)\n"
        "r = libc.mount(b'tmpfs', os.getcwd().encode(), b'tmpfs', 32, b'size=10g')\n"  # 32: MS_REMOUNT
        "print((r, ctypes.get_errno()), os.getuid())"
    )
    result = sandbox.run(code)
    assert result.error is None, result.text
    caps, remount = result.text.replace(MARK, "").strip().splitlines()
    assert caps == str(["0000000000000000"] * 5)  # inheritable, permitted, effective, bounding, ambient
    assert remount == f"(-1, 1) {os.getuid()}"  # EPERM; the trainer's uid, mapped back


def test_a_restart_frees_the_scratch_files():
    with Sandbox(timeout_s=2.0, scratch_mb=8) as sb:
        if sb.refusal is not None:
            pytest.skip(sb.refusal)
        assert sb.run("open('a', 'wb').write(b'x' * (6 << 20))").error is None
        assert "timed out" in sb.run("while True: pass").text  # a fresh worker, a fresh tmpfs
        assert sb.run("open('b', 'wb').write(b'x' * (6 << 20))\nimport os\nos.listdir()").text == "['b']\n"


def _tool_response(text: str) -> str:
    return text.split("<tool_response>")[1].split("</tool_response>")[0]


def test_one_rollouts_hostile_calls_lose_nothing_in_the_batch(chat, config, tmp_path, monkeypatch):
    """Issue 27 through the engine: a batch of 8 rollouts, five of which attack (the deep tree, memfd,
    /dev/shm, filling the scratch dir, a 5,000,000-character error), three of which are the suite's
    oracle. Every rollout is complete, every attack is answered in its own tool response, the responses
    are capped, and no sandbox folder is left behind."""
    import json
    import random
    import tempfile

    from axpo_core.envs.suites import get_suite
    from axpo_core.envs.tools import NOTE_CHARS
    from axpo_core.rollout.engine import RolloutEngine
    from axpo_core.rollout.oracle import ScriptedGenerator

    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))  # where the sandboxes make their folders
    q = get_suite("python_count").generate(1, 0)[0]
    attacks = {0: DISARM + DEEP_TREE, 1: MEMFD_60MB, 2: DEV_SHM, 3: FILL_SCRATCH, 4: HUGE_ERROR}

    def turn(code: str) -> str:  # "\u003c" is "<": the policy writes it in a JSON escape
        call = json.dumps({"name": "python", "arguments": {"code": code}}).replace("<", "\\u003c")
        return f"<think>try this</think>\n<tool_call>\n{call}\n</tool_call>"

    rng = random.Random(0)
    scripts = {(q.question_id, k): get_suite(q.suite).oracle(q, rng) for k in range(5, 8)}
    for k, code in attacks.items():
        scripts[(q.question_id, k)] = [turn(code), "<answer>\\boxed{0}</answer>"]
    rollout = config.rollout.model_copy(update={"max_new_tokens_per_turn": 4096, "max_total_tokens": 16384})
    engine = RolloutEngine(ScriptedGenerator(chat, scripts), chat, rollout, config.tools)
    trajectories = engine.rollout([q], group_size=8)
    by_sample = {t.sample_id: t for t in trajectories}
    assert sorted(by_sample) == list(range(8))
    assert all(t.error is None and not t.truncated and t.num_tool_calls == 1 for t in trajectories)
    assert all(by_sample[k].reward == 1.0 and by_sample[k].tool_errors == [None] for k in range(5, 8))
    deep, memfd, shm, fill, huge = (by_sample[k] for k in range(5))
    responses = {k: _tool_response(t.text) for k, t in by_sample.items()}
    assert "depth 1200" in responses[0] and deep.tool_errors == [None]  # the tree stood until close
    assert memfd.tool_errors[0].startswith("PermissionError: memfd_create is not allowed"), responses[1]
    assert "memfd_create is not allowed" in responses[1] and "HELD" not in responses[1]
    assert shm.tool_errors[0].startswith("PermissionError") and "HELD" not in responses[2]
    assert f"stopped {ENOSPC} after" in responses[3] and fill.tool_errors == [None], responses[3]
    cap = config.tools.python_max_output_chars
    assert huge.tool_errors[0].startswith("KeyError") and len(huge.tool_errors[0]) <= cap + NOTE_CHARS
    assert len(responses[4]) <= cap + NOTE_CHARS + 2 and "more characters cut]" in responses[4]  # + "\n"s
    assert list(scratch_root.iterdir()) == []  # every sandbox's folder is gone

"""The python sandbox: persistence, images, and that every limit holds and is reported (real processes)."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from PIL import Image

from axpo_core.envs.sandbox import _DENIED_SYSCALLS, Sandbox, _bwrap_prefix, _remove_tree, _seccomp_program


@pytest.fixture
def sandbox():
    sb = Sandbox(timeout_s=2.0, memory_mb=1024, max_output_chars=500, allow_weaker=True)
    yield sb
    sb.close()


def sandbox_processes(pid: int) -> list[int]:
    """`pid` and all its live descendants (Linux /proc): the sandbox's whole process tree."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            if Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            for task in os.listdir(f"/proc/{current}/task"):
                pending += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except (OSError, IndexError):
            continue
        found.append(current)
    return found


def test_state_persists_and_last_expression_is_shown(sandbox):
    assert sandbox.run("x = 40\ndef inc(v):\n    return v + 1").text.startswith("(no output")
    result = sandbox.run("print('hi')\ninc(x) + 1")
    assert result.error is None
    assert result.text == "hi\n42\n"


def test_images_are_preloaded_and_appended(sandbox):
    images = [Image.new("RGB", (30, 20), (255, 0, 0)), Image.new("L", (5, 7), 9)]
    result = sandbox.run("print([(im.size, im.mode) for im in _pil_images])", images[:1])
    assert result.text.strip() == "[((30, 20), 'RGB')]"
    result = sandbox.run(
        "print([(im.size, im.mode) for im in _pil_images], _pil_images[1].getpixel((0, 0)))", images
    )
    assert result.text.strip() == "[((30, 20), 'RGB'), ((5, 7), 'L')] 9"
    result = sandbox.run("import numpy as np\nnp.asarray(_pil_images[0]).sum(axis=(0, 1)).tolist()")
    assert result.text == "[153000, 0, 0]\n"  # numpy imports and works under the limits


def test_network_is_blocked(sandbox):
    result = sandbox.run("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)")
    assert result.error is not None and result.text.startswith("Error:")
    assert "network access is not allowed" in result.text
    result = sandbox.run("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)")
    assert "network access is not allowed" in result.text


def test_files_outside_the_scratch_dir_are_blocked(sandbox, tmp_path):
    result = sandbox.run("print(open('/etc/passwd').read())")
    assert result.error is not None and "'/etc/passwd' is not allowed" in result.text
    assert "root:" not in result.text
    target = tmp_path / "escaped.txt"
    result = sandbox.run(f"open({str(target)!r}, 'w').write('x')")
    assert result.error is not None and "is not allowed" in result.text
    assert not target.exists()
    assert "is not allowed" in sandbox.run("import os\nos.listdir('/')").text


def test_writing_in_cwd_works(sandbox):
    result = sandbox.run("open('notes.txt', 'w').write('hello')\nprint(open('notes.txt').read())")
    assert result.error is None and result.text == "hello\n"
    assert sandbox.run("open('notes.txt').read()").text == "'hello'\n"  # the next call sees it
    if "scratch: a tmpfs" in sandbox.isolation:  # the worker's own tmpfs, not the host's disk
        assert sandbox.scratch_dir is not None and list(sandbox.scratch_dir.iterdir()) == []


def test_starting_processes_is_blocked(sandbox):
    result = sandbox.run("import subprocess\nsubprocess.run(['true'])")
    assert result.error is not None and "starting or signalling processes is not allowed" in result.text


def test_infinite_loop_times_out_and_restarts(sandbox):
    sandbox.run("x = 1")
    first_pid = sandbox.pid
    assert first_pid is not None
    first_tree = sandbox_processes(first_pid)
    result = sandbox.run("while True:\n    pass")
    assert result.error is not None and "timed out after 2s" in result.text
    assert "variables from earlier calls are lost" in result.text
    assert [p for p in first_tree if p in sandbox_processes(p)] == []  # the whole tree was killed
    result = sandbox.run("print(x)")
    assert result.error is not None and "NameError" in result.text  # fresh worker: state lost
    assert sandbox.run("print('alive')").text == "alive\n"
    assert sandbox.pid != first_pid


def test_huge_output_is_truncated(sandbox):
    result = sandbox.run("print('x' * 100_000)")
    assert result.error is None
    assert result.text.startswith("x" * 500)
    assert "[output truncated: 99501 more characters]" in result.text
    assert len(result.text) < 600


def test_allocating_4gb_raises_memory_error(sandbox):
    result = sandbox.run("x = bytearray(4 * 1024**3)")
    assert result.error is not None and result.error.startswith("MemoryError")
    assert "limited to 1024 MB" in result.text
    assert sandbox.run("y = bytearray(10 * 1024**2)\nlen(y)").text == "10485760\n"  # still alive


def test_exceptions_report_the_last_traceback_lines(sandbox):
    result = sandbox.run("def f():\n    return 1 / 0\n\nprint('before')\nf()")
    assert result.error == "ZeroDivisionError: division by zero"
    assert result.text.startswith("Error: ZeroDivisionError: division by zero\nTraceback")
    assert "line 2, in f" in result.text and "sandbox_worker" not in result.text  # its own frames: left out
    assert result.text.endswith("Output before the error:\nbefore\n")
    syntax = sandbox.run("x = (")
    assert syntax.error is not None and syntax.error.startswith("SyntaxError")


def test_process_exit_is_reported_and_recovered(sandbox):
    result = sandbox.run("import os\nos._exit(3)")
    assert result.error is not None and "exited with code 3" in result.text
    assert sandbox.run("print(2)").text == "2\n"


def test_close_leaves_nothing_behind(sandbox):
    assert sandbox.run("open('f.txt', 'w').write('x')").error is None
    pid, scratch = sandbox.pid, sandbox.scratch_dir
    assert pid is not None and scratch is not None and scratch.is_dir()
    tree = sandbox_processes(pid)
    assert len(tree) >= 1
    sandbox.close()
    assert [p for p in tree if sandbox_processes(p)] == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not scratch.parent.exists()
    sandbox.close()  # idempotent
    assert sandbox.run("print(1)").text.startswith("Error:")


def test_isolation_is_complete_where_the_project_set_up_bubblewrap():
    """`make test` installs bubblewrap when run as root (as CI does): there the report must name every
    layer and nothing missing. Elsewhere the report must name what is missing."""
    with Sandbox() as sb:
        report = sb.isolation
        if os.geteuid() == 0 and shutil.which("bwrap"):
            assert sb.refusal is None, report
            assert "bubblewrap" in report and "seccomp" in report and "missing" not in report
            assert sb.run("import os\nos.getuid()").text == "0\n"
            assert "uid 0 without capabilities" in report and "scratch: a tmpfs bounded" in report
        else:
            assert (sb.refusal is None) == ("missing" not in report), report


@pytest.fixture
def no_bwrap(monkeypatch, tmp_path):
    """A PATH on which bwrap cannot be found (the isolation probe is keyed by bwrap's path)."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert shutil.which("bwrap") is None


def test_refuses_to_start_without_bubblewrap_unless_allowed(no_bwrap):
    with Sandbox() as strict:
        assert "missing: filesystem and namespace isolation: bubblewrap (bwrap) is not installed" in (
            strict.isolation
        )
        assert strict.refusal is not None and "allow_weaker=True" in strict.refusal
        result = strict.run("print('ran')")
        assert result.error is not None and result.error.startswith("python sandbox refused")
        assert "ran" not in result.text and strict.pid is None  # no worker was started
    with Sandbox(allow_weaker=True) as weaker:
        assert weaker.refusal is None
        assert weaker.run("print('ran')").text == "ran\n"
        if "seccomp: no fork" in weaker.isolation:  # the kernel layer that holds without bubblewrap
            disarmed_fork = weaker.run(
                "import os, sys\nfrom importlib import machinery, util\nerr_r, err_w = os.pipe()\n"
                "origin = sys.modules['_posixsubprocess'].__spec__.origin\n"
                "loader = machinery.ExtensionFileLoader('x._posixsubprocess', origin)\n"
                "m = util.module_from_spec(util.spec_from_file_location('x._posixsubprocess', origin, "
                "loader=loader))\n"
                "m.fork_exec([b'/bin/true'], [b'/bin/true'], True, (err_w,), None, None, -1, -1, -1, -1, -1, "
                "-1, err_r, err_w, True, False, -1, None, None, None, -1, None, False)"
            )
            assert disarmed_fork.error == "PermissionError: [Errno 1] Operation not permitted", disarmed_fork
        assert "WEAKER" in weaker.isolation


def test_preloaded_helpers_are_callable_and_come_back_after_a_restart():
    preload = (
        "def mean_gray(i):\n"
        "    \"\"\"Mean gray level of _pil_images[i].\"\"\"\n"
        "    im = _pil_images[i].convert('L')\n"
        "    return sum(im.histogram()[v] * v for v in range(256)) / (im.width * im.height)\n"
        "PRELOAD_RUNS = globals().get('PRELOAD_RUNS', 0) + 1\n"
    )
    with Sandbox(timeout_s=2.0, preload=preload, allow_weaker=True) as sb:
        image = Image.new("L", (4, 2), 10)
        assert sb.run("mean_gray(0)", [image]).text == "10.0\n"
        assert sb.run("PRELOAD_RUNS").text == "1\n"  # once per worker, not per call
        assert sb.run("def mean_gray(i):\n    return 'mine'\nmean_gray(0)").text == "'mine'\n"
        assert "timed out" in sb.run("while True: pass").text
        assert sb.run("mean_gray(0), PRELOAD_RUNS").text == "(10.0, 1)\n"  # fresh worker, preload again
        traceback = sb.run("mean_gray(5)").text
        assert "IndexError" in traceback and 'File "<preload>", line 3, in mean_gray' in traceback


def test_preload_runs_under_the_same_restrictions(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    helper = f"def read_it(path={str(secret)!r}):\n    return open(path).read()\n"
    with Sandbox(preload=helper, allow_weaker=True) as sb:
        result = sb.run("read_it()")
        assert result.error is not None and "is not allowed" in result.text and "s3cret" not in result.text
        assert sb.run("open('mine.txt', 'w').write('ok')\nread_it('mine.txt')").text == "'ok'\n"
    with Sandbox(preload=f"open({str(secret)!r}).read()\n", allow_weaker=True) as sb:
        result = sb.run("print(1)")  # a preload that breaks a rule keeps the sandbox from starting
        assert result.error == "python sandbox failed to start", result
    with Sandbox(preload="def broken(:\n", allow_weaker=True) as sb:
        assert sb.run("print(1)").error == "python sandbox failed to start"
    with pytest.raises(TypeError, match="preload"):
        Sandbox(preload=b"x = 1")  # type: ignore[arg-type]


def _run_bpf(program: bytes, arch: int, nr: int) -> int:
    """A classic-BPF interpreter for the few instructions the seccomp program uses."""
    data = struct.pack("=iI", nr, arch) + bytes(56)
    ops = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jump_true, jump_false, k = ops[pc]
        if code == 0x20:
            acc = struct.unpack("=I", data[k : k + 4])[0]
        elif code in (0x15, 0x35):
            taken = acc == k if code == 0x15 else acc >= k
            pc += jump_true if taken else jump_false
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")
        pc += 1


@pytest.mark.parametrize(("machine", "arch"), [("x86_64", 0xC000003E), ("aarch64", 0xC00000B7)])
def test_seccomp_program_denies_exactly_its_list(machine, arch):
    program = _seccomp_program(machine)
    assert program is not None and len(program) % 8 == 0
    column = 0 if machine == "x86_64" else 1
    denied = {nrs[column] for nrs in _DENIED_SYSCALLS.values() if nrs[column] is not None}
    eperm, allow, kill = 0x00050001, 0x7FFF0000, 0x80000000
    for nr in range(460):
        assert _run_bpf(program, arch, nr) == (eperm if nr in denied else allow), nr
    assert _run_bpf(program, 0x40000003, 2) == kill  # i386 calls on an x86_64 kernel, say
    if machine == "x86_64":
        assert _run_bpf(program, arch, 0x40000000 + 57) == eperm  # x32 calls
    assert {"fork", "clone", "clone3", "execve", "socket", "ptrace"} <= set(_DENIED_SYSCALLS)
    assert _seccomp_program("riscv64") is None


def test_bwrap_binds_only_what_it_is_given(tmp_path):
    scratch = tmp_path / "work"
    scratch.mkdir()
    wanted = ["/", "/usr/lib", str(tmp_path / "missing"), str(tmp_path)]
    args = _bwrap_prefix("/usr/bin/bwrap", wanted, str(scratch), 5 << 20)
    read_only = [args[i + 1] for i, arg in enumerate(args) if arg == "--ro-bind"]
    assert "/" not in read_only and "/usr" in read_only and "/usr/lib" not in read_only  # nested: covered
    assert str(tmp_path) in read_only and str(tmp_path / "missing") not in read_only
    # the scratch dir is a tmpfs of the quota's size, never a bind of the host's folder; no /dev/shm
    assert "--bind" not in args and "--dev" not in args and "/dev/shm" not in args
    assert args[args.index("--tmpfs") - 2 : args.index("--tmpfs") + 2] == [
        "--size", str(5 << 20), "--tmpfs", str(scratch)
    ]
    assert args[-4:] == ["--remount-ro", "/", "--chdir", str(scratch)]  # the root goes read-only last


def test_a_tree_of_any_depth_is_removed_without_following_links(tmp_path):
    """Close's removal (item 1 of issue 27): 3,000 levels of 200-character names (a path of 600,000
    characters, past both the recursion limit and PATH_MAX), a directory and a file of mode 000, and
    symlinks to a folder outside, which must survive untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    top = tmp_path / "base"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    name = "d" * 200
    try:
        for level in range(3000):
            os.mkdir(name, dir_fd=fd)
            if level % 500 == 0:
                os.symlink(outside, f"link{level}", dir_fd=fd)
                os.close(os.open(f"f{level}", os.O_CREAT | os.O_WRONLY, 0o000, dir_fd=fd))
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.mkdir("locked", dir_fd=fd)
        os.close(os.open("locked/x", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
        os.chmod("locked", 0o000, dir_fd=fd)
    finally:
        os.close(fd)
    (top / "top-link").symlink_to(outside)
    _remove_tree(top)
    assert not top.exists()
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "keep"
    link = tmp_path / "a-link"
    link.symlink_to(outside)
    _remove_tree(link)  # a symlink given as the tree: the link goes, its target stays
    assert not link.is_symlink() and (outside / "keep.txt").exists()
    _remove_tree(tmp_path / "never-there")  # nothing to do

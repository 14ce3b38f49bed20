"""Object storage against a real filesystem and a real S3 API (moto's server); the same tests run on both."""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import pytest
from moto_fixtures import FAKE_AWS_ENV, moto_endpoint, s3_bucket, s3_client  # noqa: F401

from axpo_core.runs import RunLayout
from axpo_core.storage import (
    MARKER,
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StorageError,
    local_path,
    open_store,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/runs", s3_endpoint_url=request.getfixturevalue("moto_endpoint"))


def raw_objects(store: ObjectStore) -> dict[str, bytes]:
    """Everything under the store's root, read without axpo_core.storage (os.walk / a plain boto3 client)."""
    if isinstance(store, S3Store):
        client = s3_client(store.endpoint_url)
        bucket, _, prefix = store.root[len("s3://") :].partition("/")
        listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
        return {
            o["Key"][len(prefix) + 1 :]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            for o in listing
        }
    base = local_path(store.root)
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def make_checkpoint(folder: Path, *, with_tokenizer: bool = True) -> Path:
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(os.urandom(200_000))
    if with_tokenizer:
        (folder / "sub" / "tokenizer.json").write_text('{"vocab": {}}')
    return folder


def test_round_trips(store: ObjectStore) -> None:
    uri = store.uri("exp", "run-1", "blob.bin")
    assert uri == store.root + "/exp/run-1/blob.bin"
    assert not store.exists(uri)
    assert store.put_bytes(uri, b"\x00\x01payload") == uri
    assert store.get_bytes(uri) == b"\x00\x01payload"
    assert store.exists(uri) and store.exists(store.uri("exp", "run-1"))  # a folder with an object

    store.put_json(store.uri("exp/run-1/", "/meta.json"), {"round": 3, "name": "ü"})
    assert store.get_json(store.uri("exp", "run-1", "meta.json")) == {"round": 3, "name": "ü"}
    rows = [{"i": i, "reward": i % 2} for i in range(5)]
    store.put_jsonl(store.uri("exp", "run-1", "rollouts", "round-1.jsonl"), rows)
    assert store.get_jsonl(store.uri("exp", "run-1", "rollouts", "round-1.jsonl")) == rows

    assert raw_objects(store) == {
        "exp/run-1/blob.bin": b"\x00\x01payload",
        "exp/run-1/meta.json": raw_objects(store)["exp/run-1/meta.json"],
        "exp/run-1/rollouts/round-1.jsonl": "".join(
            f'{{"i": {i}, "reward": {i % 2}}}\n' for i in range(5)
        ).encode(),
    }

    missing = store.uri("exp", "nope.json")
    with pytest.raises(ObjectNotFound, match="not found") as err:
        store.get_bytes(missing)
    assert isinstance(err.value, StorageError) and missing in str(err.value)

    clone = pickle.loads(pickle.dumps(store))  # a store may cross a Prefect task boundary
    assert clone.get_bytes(uri) == b"\x00\x01payload"


def test_put_is_atomic_for_a_concurrent_reader(store: ObjectStore) -> None:
    uri = store.uri("exp", "run", "state.bin")
    versions = [bytes([65 + i]) * 512_000 for i in range(2)]
    store.put_bytes(uri, versions[0])
    done = threading.Event()

    def writer() -> None:
        for i in range(20):
            store.put_bytes(uri, versions[i % 2])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads < 5:
        assert store.get_bytes(uri) in versions  # never a torn or empty object
        reads += 1
    thread.join()
    assert list(raw_objects(store)) == ["exp/run/state.bin"]  # no temporary files left behind


def test_create_if_absent_has_one_winner(store: ObjectStore) -> None:
    """Eight creators released at once: exactly one writes, the others are told an object is there, and
    the object holds the winner's bytes whole; no temporary file is left. On S3 this checks the client's
    side (a conditional PUT, PreconditionFailed read as "taken"): moto serves If-None-Match with a check,
    then a put, in its own server, atomic only as far as its threads interleave (AWS's is atomic)."""
    uri = store.uri("exp", "run", "_RUN_ID")
    start, won = threading.Barrier(8), {}

    def create(i: int) -> None:
        start.wait()
        won[i] = store.create_if_absent(uri, f"creator {i}".encode() * 1000)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [winner] = [i for i, ok in won.items() if ok]
    assert len(won) == 8 and store.get_bytes(uri) == f"creator {winner}".encode() * 1000
    assert store.create_if_absent(uri, b"later") is False
    assert raw_objects(store) == {"exp/run/_RUN_ID": f"creator {winner}".encode() * 1000}


def _storage_config(config, store: ObjectStore):  # the session config, storage pointed at `store`
    endpoint = store.endpoint_url if isinstance(store, S3Store) else None
    storage = config.storage.model_copy(update={"root": store.root, "s3_endpoint_url": endpoint})
    return config.model_copy(update={"storage": storage})


def _start_runs(config, races: list[str], start, ids) -> None:
    """One racer: for each run name, `make_context`'s two steps, its context made before the racers are
    released together, so that they all reach the run folder's marker at once; (name, id) go to `ids`."""
    from flows.runtime import _context, storage_id

    for name in races:
        ctx = _context(config, name)
        start.wait()
        ids.put((name, storage_id(ctx)))


def _agreed(store: ObjectStore, races: list[str], got: list[tuple[str, str]]) -> None:
    """Every racer got the id in the run's marker."""
    for name in races:
        marker = json.loads(store.get_bytes(store.uri("tiny", name, "_RUN_ID")))
        assert {i for n, i in got if n == name} == {marker["id"]}, name


def test_concurrent_starts_agree_on_the_storage_id(
    store: ObjectStore, config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 #6: runs started at once on one new folder took one id each (`_RUN_ID` was checked,
    then written). Eight threads now take one id, the one in the marker; a later start resumes it."""
    import queue

    from flows.runtime import make_context

    monkeypatch.chdir(tmp_path)  # an S3 run keeps its local outputs under ./runs
    cfg = _storage_config(config, store)
    # One new run folder per race: a local check-then-write lost about one race in three, S3's every one.
    races = [f"race-{n}" for n in range(2 if isinstance(store, S3Store) else 10)]
    start, ids = threading.Barrier(8), queue.Queue()
    threads = [threading.Thread(target=_start_runs, args=(cfg, races, start, ids)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = [ids.get_nowait() for _ in range(8 * len(races))]
    _agreed(store, races, got)
    assert make_context(cfg, races[0]).storage_id == dict(got)[races[0]]


def test_concurrent_processes_agree_on_the_storage_id(config, tmp_path: Path) -> None:
    """The same race between processes on a local folder (one `link` wins)."""
    import multiprocessing

    import axpo_core.tracking  # noqa: F401 - `_context` imports MLflow: once here, not in every child

    ctx = multiprocessing.get_context("fork")  # the children inherit the barrier and the loaded modules
    store = open_store(tmp_path / "store")
    cfg = _storage_config(config, store)
    races = [f"race-{n}" for n in range(40)]
    start, ids = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_start_runs, args=(cfg, races, start, ids)) for _ in range(4)]
    for proc in procs:
        proc.start()
    got = [ids.get(timeout=120) for _ in range(4 * len(races))]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    _agreed(store, races, got)


def test_local_put_writes_a_tmp_sibling_then_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"file://{tmp_path}", retries=0)
    target = tmp_path / "a" / "b.json"
    seen: list[tuple[Path, Path, bool, bytes]] = []
    real_replace = os.replace

    def spy(src: str | Path, dst: str | Path) -> None:
        seen.append((Path(src), Path(dst), Path(dst).exists(), Path(src).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    store.put_bytes(store.uri("a", "b.json"), b"v1")
    [(src, dst, dst_existed, content)] = seen
    assert dst == target and not dst_existed and content == b"v1"
    assert src.parent == target.parent and src.name.startswith(".b.json.axpo-tmp-")
    assert not src.exists()

    def failing_replace(src: str | Path, dst: str | Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StorageError, match="put_bytes .*b.json.*No space left") as err:
        store.put_bytes(store.uri("a", "b.json"), b"v2-never-visible")
    assert str(target.as_uri()) in str(err.value)
    assert target.read_bytes() == b"v1"  # the old content survives a failed write
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]  # the tmp file was removed


def test_put_dir_get_dir_with_marker(store: ObjectStore, tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "ckpt")
    layout = RunLayout(store, "exp", "grpo-tiny-s")
    uri = layout.checkpoint(1)
    assert uri == store.uri("exp", "grpo-tiny-s", "checkpoints", "round-1")
    assert not store.is_complete(uri)
    assert store.put_dir(src, uri) == uri
    assert store.is_complete(uri)

    raw = raw_objects(store)
    prefix = "exp/grpo-tiny-s/checkpoints/round-1/"
    assert sorted(raw) == [
        prefix + n for n in (MARKER, "config.json", "model.safetensors", "sub/tokenizer.json")
    ]
    assert raw[prefix + "model.safetensors"] == (src / "model.safetensors").read_bytes()
    manifest = store.get_json(store.uri(uri, MARKER))
    assert manifest["files"] == {"config.json": 18, "model.safetensors": 200_000, "sub/tokenizer.json": 13}

    dest = store.get_dir(uri, tmp_path / "local" / "round-1")
    assert dest == tmp_path / "local" / "round-1"
    for name in ("config.json", "model.safetensors", "sub/tokenizer.json"):
        assert (dest / name).read_bytes() == (src / name).read_bytes()
    assert (dest / MARKER).is_file()
    assert not [p for p in dest.parent.iterdir() if p.name != "round-1"]  # no tmp folder left

    (dest / "scratch.txt").write_text("kept")  # same marker: the local copy is reused as is
    store.get_dir(uri, dest)
    assert (dest / "scratch.txt").exists()

    make_checkpoint(tmp_path / "ckpt2", with_tokenizer=False)  # rewrite: stale files go, copy refreshed
    store.put_dir(tmp_path / "ckpt2", uri)
    assert store.uri(uri, "sub/tokenizer.json") not in store.list(uri)
    store.get_dir(uri, dest)
    assert not (dest / "scratch.txt").exists() and not (dest / "sub").exists()
    assert (dest / "model.safetensors").read_bytes() == (
        tmp_path / "ckpt2" / "model.safetensors"
    ).read_bytes()


def test_failed_rewrite_never_looks_complete(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = store.uri("exp", "run", "checkpoints", "round-2")
    old = make_checkpoint(tmp_path / "old")
    store.put_dir(old, uri)
    assert store.is_complete(uri)

    calls = 0
    write_one = "_upload" if isinstance(store, S3Store) else "_copy_file"
    real = getattr(type(store), write_one)

    def crash_on_second_file(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StorageError("put_file", "x", "simulated crash")
        return real(*args, **kwargs)

    patched = staticmethod(crash_on_second_file) if write_one == "_copy_file" else crash_on_second_file
    monkeypatch.setattr(type(store), write_one, patched)
    with pytest.raises(StorageError, match="simulated crash"):
        store.put_dir(make_checkpoint(tmp_path / "new"), uri)  # a rewrite dies half-way
    monkeypatch.undo()

    if isinstance(store, S3Store):  # the old marker went first; no new one was written
        assert not store.is_complete(uri)
        assert store.list(uri) == [store.uri(uri, "config.json")]  # the partial upload is there...
        with pytest.raises(StorageError, match="no _COMPLETE marker") as err:  # ...but refused
            store.get_dir(uri, tmp_path / "out")
        assert err.value.uri == uri and uri in str(err.value)
        assert not (tmp_path / "out").exists()
    else:  # built beside the folder: the old version stays whole, and the half-built one is gone
        assert store.is_complete(uri)
        folder = local_path(uri)
        assert [p.name for p in folder.parent.iterdir()] == ["round-2"]
        got = store.get_dir(uri, tmp_path / "out")
        assert (got / "model.safetensors").read_bytes() == (old / "model.safetensors").read_bytes()
    with pytest.raises(StorageError, match="no _COMPLETE marker"):
        store.get_dir(store.uri("exp", "never-written"), tmp_path / "out2")


def test_list_and_delete(store: ObjectStore) -> None:
    for name in ("a/x.json", "a/y/z.json", "a/y/w.json", "ab/v.json"):
        store.put_bytes(store.uri(name), b"{}")
    a = store.uri("a")
    assert store.list(a) == [store.uri(n) for n in ("a/x.json", "a/y/w.json", "a/y/z.json")]  # not ab/
    assert store.list(a + "/") == store.list(a)
    assert store.list(a, recursive=False) == [store.uri("a/x.json"), store.uri("a/y") + "/"]
    assert store.list(store.root, recursive=False) == [store.uri("a") + "/", store.uri("ab") + "/"]
    assert store.list(store.uri("missing")) == []

    store.delete(store.uri("a/y/z.json"))
    assert store.list(a) == [store.uri("a/x.json"), store.uri("a/y/w.json")]
    store.delete(a)
    assert not store.exists(a) and store.list(a) == []
    assert list(raw_objects(store)) == ["ab/v.json"]
    store.delete(a)  # deleting what is gone is a no-op
    store.delete(store.uri("ab/v.json/sub"))


def test_relative_absolute_and_bare_file_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("file://runs")
    assert isinstance(relative, LocalStore) and relative.root == (tmp_path / "runs").as_uri()
    uri = relative.put_bytes(relative.uri("exp", "x.txt"), b"hi")
    assert uri.startswith("file:///") and (tmp_path / "runs" / "exp" / "x.txt").read_bytes() == b"hi"
    assert relative.get_bytes("file://runs/exp/x.txt") == b"hi"  # relative URIs are read too

    assert open_store(f"file://{tmp_path}/runs").get_bytes(uri) == b"hi"
    assert open_store("runs").root == relative.root == open_store(str(tmp_path / "runs")).root
    assert local_path("file://runs/exp") == local_path("runs/exp") == tmp_path / "runs" / "exp"
    assert local_path(f"file://{tmp_path}/a") == tmp_path / "a"

    monkeypatch.chdir("/")  # the store's own URIs are absolute, so they survive a change of directory
    assert relative.get_bytes(relative.uri("exp", "x.txt")) == b"hi"
    with pytest.raises(ValueError, match="unsupported storage URI"):
        open_store("gs://bucket/x")


def count_requests(store: S3Store) -> list[str]:
    """The HTTP requests the store's client sends, one entry (the operation) per attempt."""
    sent: list[str] = []
    store.client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    return sent


def test_s3_retries_then_names_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    store = open_store("s3://bucket/prefix", s3_endpoint_url="http://127.0.0.1:1", retries=2, backoff_s=0.01)
    assert isinstance(store, S3Store)
    sent = count_requests(store)
    uri = store.uri("exp", "x.json")
    with pytest.raises(StorageError, match="failed after 3 attempts") as err:
        store.get_bytes(uri)
    assert sent == ["GET"] * 3  # botocore adds no retries of its own
    assert err.value.op == "get_bytes" and err.value.uri == uri and uri in str(err.value)
    assert "Could not connect" in str(err.value)  # the last error, EndpointConnectionError
    with pytest.raises(StorageError, match=r"put_bytes s3://bucket/prefix/exp/x.json: failed after 3"):
        store.put_bytes(uri, b"{}")


def test_s3_permanent_errors_are_not_retried(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Counted, not timed: one request and no backoff sleep for an error that another try cannot fix."""
    store = open_store("s3://no-such-bucket/p", s3_endpoint_url=moto_endpoint, retries=5, backoff_s=1.0)
    assert isinstance(store, S3Store)
    sent = count_requests(store)
    sleeps: list[float] = []
    monkeypatch.setattr("axpo_core.storage.time.sleep", sleeps.append)
    with pytest.raises(StorageError, match="NoSuchBucket") as err:
        store.put_bytes(store.uri("x"), b"1")
    assert sent == ["PUT"] and sleeps == []
    assert not isinstance(err.value, ObjectNotFound)


def test_get_dir_is_safe_for_threads_and_foreign_folders(store: ObjectStore, tmp_path: Path) -> None:
    uri = store.put_dir(make_checkpoint(tmp_path / "ckpt"), store.uri("exp", "run", "checkpoints", "sft"))
    dest = tmp_path / "cache" / "sft"
    errors: list[BaseException] = []

    def load() -> None:
        try:
            store.get_dir(uri, dest)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]  # e.g. Prefect tasks loading the reference
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (dest / "model.safetensors").read_bytes() == (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["sft"]  # no temporary folders left

    foreign = tmp_path / "my-notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    with pytest.raises(StorageError, match="not an earlier copy") as err:
        store.get_dir(uri, foreign)
    assert (foreign / "todo.txt").read_text() == "keep me"
    clone = pickle.loads(pickle.dumps(err.value))  # Prefect persists a failed task's exception
    assert type(clone) is StorageError and clone.uri == uri and str(clone) == str(err.value)


# ------------------------------------------------------------------------- races: writers and readers

SIZES = {"config.json": 64, "model.safetensors": 100_000, "sub/tokenizer.json": 50}


def make_version(folder: Path, tag: int) -> Path:
    """A checkpoint whose every byte is `tag`: same names and sizes for every tag, as checkpoints of one
    model are, so only the content tells versions apart."""
    for rel, size in SIZES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(bytes([tag]) * size)
    return folder


def tags_of(folder: Path) -> set[int]:
    """The tags found in a downloaded copy: exactly one for a consistent folder."""
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(
        [*SIZES, MARKER]
    )
    return {b for rel in SIZES for b in set((folder / rel).read_bytes())}


def hook_first_call(
    monkeypatch: pytest.MonkeyPatch, store: ObjectStore, name: str, action: object, skip: int = 0
) -> list[int]:
    """Run `action()` once, just before the (skip+1)-th call of the store's method `name` goes on."""
    cls = type(store)
    raw = cls.__dict__.get(name) or getattr(cls, name)
    is_static = isinstance(raw, staticmethod)
    real = raw.__func__ if is_static else raw
    calls = [0]

    def wrapper(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == skip + 1:
            action()  # type: ignore[operator]
        return real(*args, **kwargs)

    monkeypatch.setattr(cls, name, staticmethod(wrapper) if is_static else wrapper)
    return calls


def _write_method(store: ObjectStore) -> str:
    return "_upload" if isinstance(store, S3Store) else "_copy_file"


def _read_method(store: ObjectStore) -> str:
    return "_download" if isinstance(store, S3Store) else "_copy_file"


def test_two_writers_leave_one_writers_folder(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writer B writes the whole checkpoint while writer A is between its first and second file: the
    folder that ends up marked complete holds one writer's files only (before: A's marker over B's
    first file and A's others, accepted since the sizes match)."""
    uri = store.uri("exp", "run", "checkpoints", "round-1")
    a, b = make_version(tmp_path / "a", 1), make_version(tmp_path / "b", 2)
    other = pickle.loads(pickle.dumps(store))  # another process's store: its own client
    hook_first_call(monkeypatch, store, _write_method(store), lambda: other.put_dir(b, uri), skip=1)
    store.put_dir(a, uri)
    monkeypatch.undo()

    marker = store.get_json(store.uri(uri, MARKER))
    got = store.get_dir(uri, tmp_path / "copy")
    assert tags_of(got) == {1}  # A finished last: its folder, whole (S3: A rewrote B's first file)
    assert json.loads((got / MARKER).read_text())["writer"] == marker["writer"]
    if isinstance(store, S3Store):  # every file carries the writer the marker names, at the ETag it names
        client = s3_client(store.endpoint_url)
        bucket, key = store.root[len("s3://") :].split("/", 1)
        for rel in SIZES:
            head = client.head_object(Bucket=bucket, Key=f"{key}/exp/run/checkpoints/round-1/{rel}")
            assert head["Metadata"]["axpo-writer"] == marker["writer"]
            assert head["ETag"] == marker["versions"][rel]


def test_reader_racing_a_rewrite_takes_one_version(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is rewritten after the reader read the marker and its first file: the reader never
    returns the old marker with new files; it reads the marker again and returns the new version."""
    uri = store.uri("exp", "run", "checkpoints", "sft")
    store.put_dir(make_version(tmp_path / "v1", 1), uri)
    v2 = make_version(tmp_path / "v2", 2)
    writer = pickle.loads(pickle.dumps(store))
    calls = hook_first_call(monkeypatch, store, _read_method(store), lambda: writer.put_dir(v2, uri), skip=1)
    got = store.get_dir(uri, tmp_path / "copy")
    assert calls[0] > len(SIZES)  # it did start over
    assert tags_of(got) == {2}
    assert (got / MARKER).read_bytes() == store.get_bytes(store.uri(uri, MARKER))


def test_reader_racing_an_unfinished_rewrite(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rewrite that has replaced one file and not yet written its marker: locally it is invisible (the
    reader gets the old version whole); on S3 the reader refuses the folder rather than mix versions."""
    uri = store.uri("exp", "run", "checkpoints", "sft")
    store.put_dir(make_version(tmp_path / "v1", 1), uri)
    v2 = make_version(tmp_path / "v2", 2)
    writer = pickle.loads(pickle.dumps(store))

    def half_rewrite() -> None:
        if isinstance(writer, S3Store):  # what a writer killed after its first file leaves
            writer.delete(writer.uri(uri, MARKER))
            writer.put_file(v2 / "model.safetensors", writer.uri(uri, "model.safetensors"))
        else:
            tmp = local_path(uri).with_name(".sft.axpo-tmp-killed-writer")
            make_version(tmp, 2)

    hook_first_call(monkeypatch, store, _read_method(store), half_rewrite, skip=1)
    if isinstance(store, S3Store):
        with pytest.raises(StorageError, match="no _COMPLETE marker.*rewritten while being read"):
            store.get_dir(uri, tmp_path / "copy")
        assert not (tmp_path / "copy").exists()
    else:
        assert tags_of(store.get_dir(uri, tmp_path / "copy")) == {1}
    monkeypatch.undo()
    store.put_dir(v2, uri)  # the next complete write is read whole
    assert tags_of(store.get_dir(uri, tmp_path / "copy")) == {2}


def test_s3_marker_naming_other_files_is_refused(s3_bucket: str, moto_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    """A folder marked complete whose file was since replaced by another writer is refused (named)."""
    store = open_store(f"s3://{s3_bucket}/runs", s3_endpoint_url=moto_endpoint, backoff_s=0.0)
    uri = store.uri("exp", "run", "checkpoints", "sft")
    store.put_dir(make_version(tmp_path / "v1", 1), uri)
    bucket, key = s3_bucket, "runs/exp/run/checkpoints/sft/model.safetensors"
    s3_client(moto_endpoint).put_object(
        Bucket=bucket,
        Key=key,
        Body=bytes([7]) * SIZES["model.safetensors"],
        Metadata={"axpo-writer": "intruder"},
    )
    with pytest.raises(StorageError, match="model.safetensors is from writer intruder") as err:
        store.get_dir(uri, tmp_path / "copy")
    assert uri in str(err.value) and not (tmp_path / "copy").exists()


READS = 24


def test_concurrent_writers_and_readers(store: ObjectStore, tmp_path: Path) -> None:
    """Threads: two writers rewriting one checkpoint while a reader loads it. Every load is one
    version whole; a load may be refused while a rewrite runs, never answered with a mix. Once the
    writers are done (the last one having finished alone), the folder loads whole."""
    uri = store.uri("exp", "run", "checkpoints", "round-3")
    versions = [make_version(tmp_path / f"v{tag}", tag) for tag in (1, 2)]
    store.put_dir(versions[0], uri)
    enough = threading.Event()
    loads: list[set[int]] = []
    refusals: list[str] = []
    failures: list[BaseException] = []
    last_write_refused = {1: False, 2: False}

    def write(tag: int) -> None:
        own = pickle.loads(pickle.dumps(store))
        try:
            for _ in range(200):
                if enough.is_set():
                    break
                try:
                    own.put_dir(versions[tag - 1], uri)
                    last_write_refused[tag] = False
                except StorageError as exc:  # S3: the other writer kept replacing our files
                    assert "another writer" in str(exc)
                    last_write_refused[tag] = True
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    def load(own: ObjectStore, i: int) -> None:
        try:
            loads.append(tags_of(own.get_dir(uri, tmp_path / f"copy-{i % 2}")))
        except StorageError as exc:
            refusals.append(str(exc))

    def read() -> None:
        own = pickle.loads(pickle.dumps(store))
        try:
            for i in range(READS):
                load(own, i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        enough.set()

    writers = [threading.Thread(target=write, args=(tag,)) for tag in (1, 2)]
    reader = threading.Thread(target=read)
    for t in [*writers, reader]:
        t.start()
    for t in [reader, *writers]:
        t.join()
    assert failures == []
    assert len(loads) + len(refusals) == READS
    assert all(len(tags) == 1 for tags in loads), loads
    assert all("no _COMPLETE marker" in r or "not of the version" in r for r in refusals), refusals
    if not any(last_write_refused.values()):  # the writer that finished last did so alone: it stands
        settled = tags_of(store.get_dir(uri, tmp_path / "settled"))
        assert len(settled) == 1
    store.put_dir(versions[1], uri)
    assert tags_of(store.get_dir(uri, tmp_path / "final")) == {2}


# ------------------------------------------------------------------------------- timeouts, multipart


class BlackHole:
    """A TCP endpoint on 127.0.0.1 that accepts connections and never answers; counts them."""

    def __init__(self) -> None:
        import socket

        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.held: list[object] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.accepted += 1
            self.held.append(conn)  # open, silent

    def accepted_settled(self, at_least: int) -> int:
        """The count once the accept loop has caught up with the kernel's backlog (it may lag on a loaded
        machine): waits for `at_least`, at most 100 polls, then answers whatever it counted."""
        import time

        for _ in range(100):
            if self.accepted >= at_least:
                break
            time.sleep(0.05)
        time.sleep(0.1)  # and a moment for any surplus connection to show up
        return self.accepted

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        for conn in self.held:
            conn.close()  # type: ignore[attr-defined]
        self.server.close()


def test_black_hole_endpoint_fails_after_bounded_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    hole = BlackHole()
    try:
        store = open_store(
            "s3://bucket/p",
            s3_endpoint_url=f"http://127.0.0.1:{hole.port}",
            retries=2,
            backoff_s=0.0,
            connect_timeout_s=0.5,
            read_timeout_s=0.3,
        )
        with pytest.raises(
            StorageError, match="get_bytes s3://bucket/p/x: failed after 3 attempts.*[Tt]imeout"
        ):
            store.get_bytes(store.uri("x"))
        assert (
            hole.accepted_settled(3) == 3
        )  # one connection per attempt, each given up after the read timeout
        with pytest.raises(StorageError, match="put_bytes .*failed after 3 attempts"):
            store.put_bytes(store.uri("x"), b"1")
        assert hole.accepted_settled(6) == 6
    finally:
        hole.close()


def test_timeouts_come_from_config_and_are_bounded_by_default(tmp_path: Path) -> None:
    from axpo_core.config import StorageConfig
    from axpo_core.storage import open_configured_store

    default = StorageConfig()
    worst_per_attempt = max(default.connect_timeout_s, default.read_timeout_s)
    backoff = sum(default.retry_backoff_s * 2**i for i in range(default.retries))
    assert worst_per_attempt <= 30 and (default.retries + 1) * worst_per_attempt + backoff <= 30

    config = StorageConfig(
        root="s3://bucket/runs", connect_timeout_s=1.5, read_timeout_s=2.5, retries=1, retry_backoff_s=0.1
    )
    store = open_configured_store(config)
    assert isinstance(store, S3Store) and store.retries == 1 and store.backoff_s == 0.1
    client_config = store.client.meta.config
    assert (client_config.connect_timeout, client_config.read_timeout) == (1.5, 2.5)
    assert client_config.retries["total_max_attempts"] == 1
    assert isinstance(open_configured_store(StorageConfig(root=str(tmp_path))), LocalStore)


def multipart_store(bucket: str, endpoint: str) -> S3Store:
    store = S3Store(f"s3://{bucket}/runs", endpoint_url=endpoint, retries=0, multipart_threshold=6 << 20)
    store.part_size = 5 << 20  # S3's smallest; an 11 MiB file is 3 parts
    return store


def uploads_in(bucket: str, endpoint: str) -> list[str]:
    return [u["Key"] for u in s3_client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_multipart_upload_round_trips_and_aborts_on_failure(
    s3_bucket: str,  # noqa: F811
    moto_endpoint: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    from botocore.exceptions import EndpointConnectionError

    store = multipart_store(s3_bucket, moto_endpoint)
    big = tmp_path / "ckpt" / "model.safetensors"
    big.parent.mkdir()
    big.write_bytes(os.urandom(11 << 20))
    uri = store.put_dir(big.parent, store.uri("exp", "run", "checkpoints", "big"))
    got = store.get_dir(uri, tmp_path / "copy")
    assert (got / "model.safetensors").read_bytes() == big.read_bytes()
    assert uploads_in(s3_bucket, moto_endpoint) == []

    parts: list[int] = []

    def fail_second_part(params: dict, **_: object) -> None:
        parts.append(params["PartNumber"])
        if params["PartNumber"] == 2:
            raise EndpointConnectionError(endpoint_url=moto_endpoint)

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    with pytest.raises(StorageError, match="put_dir .*model.safetensors: failed after 1 attempts"):
        store.put_dir(big.parent, uri)
    assert parts == [1, 2]
    assert uploads_in(s3_bucket, moto_endpoint) == []  # aborted, not left dangling (and billed)


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from axpo_core.storage import S3Store

bucket, endpoint, folder = sys.argv[1:4]
store = S3Store(f"s3://{bucket}/runs", endpoint_url=endpoint, retries=0, multipart_threshold=6 << 20)
store.part_size = 5 << 20

def kill_on_second_part(params, **_):
    if params["PartNumber"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no except, no finally: like kill -9 of the trainer

store.client.meta.events.register("before-parameter-build.s3.UploadPart", kill_on_second_part)
store.put_dir(Path(folder), store.uri("exp", "run", "checkpoints", "big"))
"""


def test_writer_killed_mid_multipart_is_cleaned_up_by_the_next_write(
    s3_bucket: str,  # noqa: F811
    moto_endpoint: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(os.urandom(11 << 20))
    env = {**os.environ, **FAKE_AWS_ENV, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, s3_bucket, moto_endpoint, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    key = "runs/exp/run/checkpoints/big/model.safetensors"
    assert uploads_in(s3_bucket, moto_endpoint) == [key]  # what kill -9 leaves

    store = multipart_store(s3_bucket, moto_endpoint)
    uri = store.put_dir(folder, store.uri("exp", "run", "checkpoints", "big"))
    assert store.is_complete(uri) and uploads_in(s3_bucket, moto_endpoint) == []

"""Object storage against a real filesystem and a real S3 API (moto's server); the same tests run on both."""

from __future__ import annotations

import os
import pickle
import threading
import time
from pathlib import Path

import pytest
from moto_fixtures import FAKE_AWS_ENV, moto_endpoint, s3_bucket, s3_client  # noqa: F401

from axpo_core.storage import (
    MARKER,
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    RunLayout,
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


def test_folder_without_marker_is_never_complete(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = store.uri("exp", "run", "checkpoints", "round-2")
    store.put_dir(make_checkpoint(tmp_path / "ckpt"), uri)
    assert store.is_complete(uri)

    calls = 0
    real_put_file = type(store)._put_file

    def crash_on_second_file(self: ObjectStore, src: Path, file_uri: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StorageError("put_file", file_uri, "simulated crash")
        real_put_file(self, src, file_uri)

    monkeypatch.setattr(type(store), "_put_file", crash_on_second_file)
    with pytest.raises(StorageError, match="simulated crash"):
        store.put_dir(tmp_path / "ckpt", uri)  # a rewrite dies half-way
    assert not store.is_complete(uri)  # the old marker went first; no new one was written
    assert store.list(uri) == [store.uri(uri, "config.json")]  # the partial upload is there...

    with pytest.raises(StorageError, match="no _COMPLETE marker") as err:  # ...but refused
        store.get_dir(uri, tmp_path / "out")
    assert err.value.uri == uri and uri in str(err.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(StorageError, match="no _COMPLETE marker"):
        store.get_dir(store.uri("exp", "never-written"), tmp_path / "out")


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


def test_s3_retries_then_names_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    store = open_store("s3://bucket/prefix", s3_endpoint_url="http://127.0.0.1:1", retries=2, backoff_s=0.01)
    uri = store.uri("exp", "x.json")
    start = time.monotonic()
    with pytest.raises(StorageError, match="failed after 3 attempts") as err:
        store.get_bytes(uri)
    assert time.monotonic() - start < 5
    assert err.value.op == "get_bytes" and err.value.uri == uri and uri in str(err.value)
    assert "Could not connect" in str(err.value)  # the last error, EndpointConnectionError
    with pytest.raises(StorageError, match=r"put_bytes s3://bucket/prefix/exp/x.json: failed after 3"):
        store.put_bytes(uri, b"{}")


def test_s3_permanent_errors_are_not_retried(moto_endpoint: str) -> None:  # noqa: F811
    store = open_store("s3://no-such-bucket/p", s3_endpoint_url=moto_endpoint, retries=5, backoff_s=1.0)
    start = time.monotonic()
    with pytest.raises(StorageError, match="NoSuchBucket") as err:
        store.put_bytes(store.uri("x"), b"1")
    assert time.monotonic() - start < 1.0  # five retries with 1 s backoff would take a minute
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

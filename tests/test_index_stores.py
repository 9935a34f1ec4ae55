"""One Index API over two stores: FAISS + SQLite folders and Milvus (Milvus Lite,
embedded and as a gRPC server on loopback); migration; scan --index; and the fixes
to the FAISS store (stale readers, the model-check race, dimension 0)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import pixguard.index as index_module
from pixguard import Classifier, IndexModelMismatchError, IndexStoreError
from pixguard.cli import app
from pixguard.index import REFRESH_SECONDS, Index, NewEntry, migrate


def test_index_all_is_the_public_api() -> None:
    for name in index_module.__all__:
        assert hasattr(index_module, name), name


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_milvus_server(data: Path, port: int) -> subprocess.Popen[bytes]:
    """Milvus Lite's gRPC server (``milvus-lite server``), the protocol a cluster speaks."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "milvus_lite",
            "server",
            "--data-dir",
            str(data),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.2)
    process.kill()
    raise TimeoutError("the Milvus Lite server did not start")


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, list]]:
    data = tmp_path_factory.mktemp("milvus-server")
    port = _free_port()
    holder = [_start_milvus_server(data, port)]
    yield data, port, holder
    for process in holder:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def tiny(tiny_vit_folder: Path) -> Iterator[Classifier]:
    with Classifier.load(str(tiny_vit_folder), runtime="torch") as classifier:
        yield classifier


_collections = iter(range(1000))


@pytest.fixture(params=["faiss", "milvus-lite", "milvus-server"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "faiss":
        return str(tmp_path / "idx")
    if request.param == "milvus-lite":
        return f"milvus:{tmp_path / 'idx.db'}"
    _, port, _ = request.getfixturevalue("milvus_server")
    return f"milvus://127.0.0.1:{port}/c{next(_collections)}"


def test_every_store_keeps_the_index_contract(
    location: str, photos: list[Path], tiny: Classifier, tmp_path: Path
) -> None:
    copy = tmp_path / "same-bytes.png"
    shutil.copy(photos[0], copy)
    with Index.open(location) as index:
        assert index.model is None and index.stats()["entries"] == 0
        report = index.add_images(photos[:4], tiny, tags=["seed"])
        assert len(report.added) == 4
        again = index.add_images([copy], tiny)  # same bytes, another name
        assert again.added == [] and again.duplicates == 1
        assert (index.model, index.dim) == (tiny.name, 192)

        hits = index.search(photos[2], k=3, classifier=tiny)
        assert hits[0].entry.source == str(photos[2]) and hits[0].similarity == pytest.approx(1.0)
        assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
        assert hits[0].entry.tags == ("seed",) and hits[0].entry.model == tiny.name
        vector = tiny.classify(photos[1]).embedding
        assert vector is not None
        # Cosine similarity: scaling a vector changes nothing.
        assert index.search(vector * 7.5, k=1)[0].similarity == pytest.approx(1.0, abs=1e-5)

        exact = [group for group in index.dedupe(0.999) if group["kind"] == "exact"]
        assert exact[0]["also_added_as"] == [str(copy)]

        with pytest.raises(IndexModelMismatchError):
            index.add_entries([NewEntry("f" * 64, "x", None, None, np.ones(8))], model="other")

        bank = index.match(tiny.predict([photos[3]]))
        assert bank[0].matched and bank[0].nearest is not None

        index.bank_threshold = 0.8
        removed_id = hits[0].entry.id
        assert index.remove([removed_id]) == 1
        assert removed_id not in {h.entry.id for h in index.search(photos[2], classifier=tiny)}
    with Index.open(location, create=False) as reopened:
        assert reopened.stats()["entries"] == 3 and reopened.bank_threshold == 0.8
        assert reopened.stats()["labels"] and reopened.model == tiny.name


def test_milvus_server_keeps_acknowledged_adds_through_a_kill(
    milvus_server: tuple[Path, int, list], photos: list[Path], tiny: Classifier
) -> None:
    data, port, holder = milvus_server
    location = f"milvus://127.0.0.1:{port}/durable"
    with Index.open(location) as index:
        added = index.add_images(photos[:3], tiny).added
    holder[0].kill()  # SIGKILL: no shutdown, no flush on exit
    holder[0].wait()
    holder[0] = _start_milvus_server(data, port)
    with Index.open(location, create=False) as index:
        assert sorted(index.entries(added)) == sorted(added)
        assert index.search(photos[1], k=1, classifier=tiny)[0].entry.source == str(photos[1])


def test_open_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    for location in (f"milvus:{tmp_path / 'missing.db'}", str(tmp_path / "missing")):
        with pytest.raises(IndexStoreError, match="no index here"):
            Index.open(location, create=False)
    with pytest.raises(IndexStoreError, match=r"ends in \.db"):
        Index.open(f"milvus:{tmp_path / 'x.sqlite'}")
    with pytest.raises(IndexStoreError, match="HOST:PORT"):
        Index.open("milvus://nohost/collection")
    with pytest.raises(IndexStoreError, match=r"cannot connect|failed"):
        Index.open(f"milvus://127.0.0.1:{_free_port()}/c")


def test_cli_migrate_faiss_to_milvus_keeps_search_results(
    tmp_path: Path, photos: list[Path], tiny: Classifier
) -> None:
    folder = tmp_path / "faiss"
    with Index.open(folder) as index:
        index.add_images(photos, tiny)
        index.add_images([shutil.copy(photos[0], tmp_path / "alias.png")], tiny)
        index.bank_threshold = 0.85
        before = [
            [h.entry.source for h in hits]
            for hits in index.search_vectors(
                np.stack([p.embedding for p in tiny.predict(photos)]), k=3
            )
        ]
    target = f"milvus:{tmp_path / 'moved.db'}"
    result = CliRunner().invoke(app, ["index", "migrate", "--from", str(folder), "--to", target])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["added"] == len(photos)
    with Index.open(target, create=False) as moved:
        after = [
            [h.entry.source for h in hits]
            for hits in moved.search_vectors(
                np.stack([p.embedding for p in tiny.predict(photos)]), k=3
            )
        ]
        assert after == before
        assert moved.bank_threshold == 0.85 and moved.model == tiny.name
        assert list(moved.aliases().values()) == [[str(tmp_path / "alias.png")]]
        assert migrate(Index.open(folder), moved) == 0  # rerun: nothing new


def test_scan_bulk_loads_its_embeddings_into_milvus(
    tmp_path: Path, photos: list[Path], tiny_vit_folder: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for photo in photos[:3]:
        shutil.copy(photo, source / photo.name)
    (source / "bad.jpg").write_bytes(b"nope")
    target = f"milvus:{tmp_path / 'scan.db'}"
    arguments = ["scan", str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_vit_folder)]
    arguments += ["--runtime", "torch", "--index", target, "--format", "json"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["indexed"] == 3
    with Index.open(target, create=False) as index:
        assert index.stats()["entries"] == 3 and index.model == str(tiny_vit_folder)
        with Classifier.load(str(tiny_vit_folder), runtime="torch") as classifier:
            hit = index.search(photos[1], k=1, classifier=classifier)[0]
        assert hit.entry.source == str((source / photos[1].name).absolute())
        assert hit.similarity == pytest.approx(1.0, abs=1e-5)
    again = CliRunner().invoke(app, arguments)
    assert json.loads(again.output.splitlines()[-1])["indexed"] == 0


# -- fixes to the FAISS store ------------------------------------------------------------


def test_a_long_running_reader_sees_other_writers_within_the_bound(
    tmp_path: Path, photos: list[Path], tiny: Classifier
) -> None:
    """A server's bank (one Index object, kept open) and a CLI adding to it (another)."""
    folder = tmp_path / "bank"
    with Index.open(folder) as writer:
        writer.add_images(photos[:2], tiny)
    reader = Index.open(folder, create=False)
    query = tiny.predict([photos[4]])
    assert not reader.match(query)[0].matched  # the reader has built its structure
    with Index.open(folder) as writer:
        writer.add_images([photos[4]], tiny)
    time.sleep(REFRESH_SECONDS * 1.2)
    found = reader.match(query)[0]
    assert found.matched and found.nearest is not None
    assert found.nearest.entry.source == str(photos[4])
    with Index.open(folder) as writer:
        writer.remove([found.nearest.entry.id])
    time.sleep(REFRESH_SECONDS * 1.2)
    assert not reader.match(query)[0].matched
    reader.close()


def test_two_first_adds_with_different_models_cannot_both_bind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check and the record are one transaction: a slow reader between them (as
    under load) no longer lets both first adds pass."""
    from pixguard.index import _store

    folder = tmp_path / "race"
    Index.open(folder).close()
    original = _store.MetadataStore.get_meta

    def slow_get_meta(self: _store.MetadataStore, key: str) -> str | None:
        value = original(self, key)
        if key == "model":
            time.sleep(0.3)  # widen the window between check and record
        return value

    monkeypatch.setattr(_store.MetadataStore, "get_meta", slow_get_meta)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def first_add(model: str, dim: int) -> None:
        with Index.open(folder) as index:
            barrier.wait()
            entry = NewEntry(model.ljust(64, "0"), model, None, None, np.ones(dim))
            try:
                index.add_entries([entry], model=model)
                outcomes.append("added")
            except IndexModelMismatchError:
                outcomes.append("refused")

    threads = [threading.Thread(target=first_add, args=a) for a in (("a", 8), ("b", 16))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()
    assert sorted(outcomes) == ["added", "refused"]
    with Index.open(folder, create=False) as index:
        assert index.stats()["entries"] == 1
        assert index.search(np.ones(index.dim or 0), k=1)[0].entry.model == index.model


def test_a_model_folder_without_num_features_binds_its_real_dimension(
    tmp_path: Path, tiny_vit_folder: Path, photos: list[Path]
) -> None:
    from pixguard.export import export_model

    exported = tmp_path / "onnx"
    export_model(str(tiny_vit_folder), format="onnx", output=exported)
    config = json.loads((exported / "config.json").read_text())
    config.pop("num_features", None)
    (exported / "config.json").write_text(json.dumps(config))
    with Classifier.load(str(exported), runtime="onnxruntime") as classifier:
        assert classifier.embedding_dim == 192
        with Index.open(tmp_path / "idx") as index:
            index.add_images(photos[:2], classifier)
            assert index.dim == 192
            assert index.search(photos[0], k=1, classifier=classifier)[0].similarity > 0.99

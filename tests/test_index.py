"""The embedding index: search, duplicates, clusters, banks, persistence and crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pixguard import Classifier, IndexEntryNotFoundError, IndexModelMismatchError
from pixguard.cli import app
from pixguard.index import Index, cluster
from pixguard.index._vectors import VectorIndex
from tests.helpers import gradient_image

runner = CliRunner()


@pytest.fixture(scope="module")
def opennsfw() -> Classifier:
    # A real, trained model: its embeddings make similarity tests meaningful.
    return Classifier.load("opennsfw", runtime="onnxruntime")


@pytest.fixture(scope="module")
def edited(tmp_path_factory, photos) -> dict[str, list[Path]]:
    """Each photo's edited copies: resized, re-encoded, lightly cropped."""
    folder = tmp_path_factory.mktemp("edited")
    copies = {}
    for photo in photos:
        image = Image.open(photo).convert("RGB")
        w, h = image.size
        variants = {
            "resized": image.resize((w // 2, h // 2)),
            "reencoded": image,
            "cropped": image.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
        }
        copies[photo.name] = []
        for name, variant in variants.items():
            path = folder / f"{photo.stem}-{name}.jpg"
            variant.save(path, quality=70)
            copies[photo.name].append(path)
    return copies


@pytest.fixture
def index(tmp_path, photos, opennsfw) -> Index:
    with Index.open(tmp_path / "idx") as built:
        report = built.add_images(photos, opennsfw)
        assert len(report.added) == len(photos)
    opened = Index.open(tmp_path / "idx", create=False)
    yield opened
    opened.close()


def test_edited_copies_find_their_original_first(index, edited, opennsfw):
    for original, copies in edited.items():
        for copy in copies:
            hits = index.search(copy, k=3, classifier=opennsfw)
            assert Path(hits[0].entry.source).name == original, copy.name
            assert hits[0].similarity > hits[1].similarity + 0.1


def test_search_by_id_vector_and_min_similarity(index, photos):
    hits = index.search(1, k=3)
    assert hits[0].entry.id == 1
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    vector = np.random.default_rng(0).normal(size=index.dim).astype(np.float32)
    assert len(index.search(vector, k=4)) == 4
    assert index.search(1, k=10, min_similarity=0.99) == hits[:1]
    with pytest.raises(IndexEntryNotFoundError):
        index.search(999)


def test_entries_hold_their_metadata(index, photos):
    entry = index.search(1, k=1)[0].entry
    assert entry.source == str(photos[0])
    assert len(entry.sha256) == 64
    assert entry.label in {"nsfw", "sfw"}
    assert 0.0 <= entry.score <= 1.0
    assert entry.model == "opennsfw"
    assert entry.created <= time.time()


def test_same_bytes_are_embedded_once(index, photos, opennsfw, tmp_path):
    copy = tmp_path / "same-bytes.png"
    copy.write_bytes(photos[0].read_bytes())
    calls = []
    report = index.add_images([photos[0], copy], opennsfw, on_result=calls.append)
    assert report.added == []
    assert report.duplicates == 2
    assert calls == []  # nothing was embedded again
    exact = [g for g in index.dedupe() if g["kind"] == "exact"]
    assert str(copy) in exact[0]["also_added_as"]


def test_another_model_is_refused(index, tiny_vit_folder):
    tiny = Classifier.load(tiny_vit_folder, runtime="torch")
    with pytest.raises(IndexModelMismatchError, match="opennsfw"):
        index.add_images([np.zeros((32, 32, 3), np.uint8)], tiny)
    with pytest.raises(IndexModelMismatchError):
        index.search(np.zeros(192, np.float32))
    with pytest.raises(IndexModelMismatchError):
        index.match(tiny.predict([np.zeros((32, 32, 3), np.uint8)]))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_removed_entries_are_not_returned(index, kind):
    index.rebuild(kind)
    assert index.stats()["kind"] == kind
    assert index.search(2, k=1)[0].entry.id == 2
    assert index.remove([2]) == 1
    assert all(hit.entry.id != 2 for hit in index.search(index.search(1, k=1)[0].entry.id, k=10))
    assert index.stats()["entries"] == 6


def test_near_duplicate_groups(index, edited, opennsfw):
    index.add_images(edited["rocket.jpg"], opennsfw)
    groups = [g for g in index.dedupe(threshold=0.95) if g["kind"] == "near"]
    rocket = next(
        g for g in groups if any(Path(e["source"]).name == "rocket.jpg" for e in g["entries"])
    )
    assert {Path(e["source"]).name for e in rocket["entries"]} == {"rocket.jpg"} | {
        p.name for p in edited["rocket.jpg"]
    }


def test_clusters_separate_distinct_groups(tmp_path, opennsfw, photos):
    gradients = []
    for seed in range(6):
        path = tmp_path / f"gradient{seed}.png"
        gradient_image(200, 160, seed=seed).save(path)
        gradients.append(path)
    with Index.open(tmp_path / "idx") as store:
        store.add_images(photos + gradients, opennsfw)
        clusters = cluster(store, 2, sheets=tmp_path / "sheets")
    assert sum(c.size for c in clusters) == len(photos) + len(gradients)
    gradient_cluster = max(
        clusters, key=lambda c: sum("gradient" in str(e.source) for e in c.representatives)
    )
    assert gradient_cluster.size == len(gradients)
    for group in clusters:
        assert group.contact_sheet is not None
        assert Image.open(group.contact_sheet).size[0] > 100


def test_persistence_and_catch_up(tmp_path, photos, opennsfw):
    folder = tmp_path / "idx"
    with Index.open(folder) as store:
        store.add_images(photos[:4], opennsfw)
    assert list(folder.glob("vectors-*.faiss"))
    with Index.open(folder) as store:
        store.add_images(photos[4:], opennsfw)
        expected = [h.entry.id for h in store.search(1, k=7)]
    for saved in folder.glob("vectors-*.faiss"):
        saved.unlink()  # the derived structure is gone: it is rebuilt from the database
    with Index.open(folder) as store:
        assert [h.entry.id for h in store.search(1, k=7)] == expected
        assert store.stats()["vectors_in_structure"] == len(photos)


def test_approximate_kinds_keep_recall():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 64)).astype(np.float32)
    data = centres[rng.integers(0, 200, 12000)] + 0.5 * rng.normal(size=(12000, 64)).astype(
        np.float32
    )
    ids = np.arange(1, 12001)
    exact = VectorIndex.create(64, "flat")
    exact.add(ids, data)
    for kind in ("hnsw", "ivfpq"):
        approx = VectorIndex.create(64, kind, training=data)
        approx.add(ids, data)
        _, want = exact.search(data[:100], 10)
        _, got = approx.search(data[:100], 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got, strict=True)])
        assert recall > (0.95 if kind == "hnsw" else 0.7), (kind, recall)


CRASH_WRITER = r"""
import sys, numpy as np
from pixguard import Classifier
from pixguard.index import Index
classifier = Classifier.load("opennsfw", runtime="onnxruntime")
store = Index.open(sys.argv[1])
for i in range(10_000):
    rng = np.random.default_rng(i)
    image = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    import io
    from PIL import Image
    buffer = io.BytesIO(); Image.fromarray(image).save(buffer, format="PNG")
    report = store.add_images([buffer.getvalue()], classifier)
    print("ack", report.added[0], flush=True)
"""


def test_kill_9_mid_add_keeps_every_acknowledged_entry(tmp_path):
    folder = tmp_path / "idx"
    writer = subprocess.Popen(
        [sys.executable, "-c", CRASH_WRITER, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    acknowledged = []
    deadline = time.monotonic() + 120
    assert writer.stdout is not None
    while len(acknowledged) < 25 and time.monotonic() < deadline:
        line = writer.stdout.readline()
        if line.startswith("ack"):
            acknowledged.append(int(line.split()[1]))
    time.sleep(0.05 * (len(acknowledged) % 7))  # land somewhere inside the next add
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert len(acknowledged) >= 25
    with Index.open(folder, create=False) as store:
        stats = store.stats()
        assert stats["entries"] >= len(acknowledged)
        for entry_id in acknowledged:
            hits = store.search(entry_id, k=1)
            assert hits[0].entry.id == entry_id
            assert hits[0].similarity == pytest.approx(1.0, abs=1e-4)


def test_cli_index_and_bank(tmp_path, photos, edited):
    bank = tmp_path / "bank"
    added = runner.invoke(
        app,
        [
            "index",
            "add",
            str(photos[5]),
            str(photos[6]),
            "-i",
            str(bank),
            "-m",
            "opennsfw",
            "--runtime",
            "onnxruntime",
            "--tags",
            "removed,2026",
        ],
    )
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["added"] == 2
    stats = json.loads(runner.invoke(app, ["index", "stats", "-i", str(bank), "-f", "json"]).stdout)
    assert stats["model"] == "opennsfw"
    assert stats["entries"] == 2

    reupload = edited[photos[5].name][2]  # a cropped, re-encoded copy of a banked image
    unrelated = photos[0]
    result = runner.invoke(
        app,
        [
            "classify",
            str(reupload),
            str(unrelated),
            "-m",
            "opennsfw",
            "--runtime",
            "onnxruntime",
            "--bank",
            str(bank),
            "-f",
            "jsonl",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["bank_match"] is True
    assert rows[0]["label"] == "sfw"  # flagged although the classifier says safe
    assert rows[0]["bank_nearest"]["source"] == str(photos[5])
    assert rows[1]["bank_match"] is False

    searched = runner.invoke(
        app, ["index", "search", str(reupload), "-i", str(bank), "-k", "1", "-f", "json"]
    )
    assert json.loads(searched.stdout)[0]["tags"] == ["removed", "2026"]

    wrong_model = runner.invoke(
        app, ["classify", str(unrelated), "-m", "opennsfw", "--bank", str(tmp_path / "none")]
    )
    assert wrong_model.exit_code == 2


def test_cli_adds_classify_embeddings_output(tmp_path, photos, opennsfw):
    vectors, records = tmp_path / "e.npy", tmp_path / "r.jsonl"
    result = runner.invoke(
        app,
        [
            "classify",
            *map(str, photos[:3]),
            str(tmp_path / "missing.jpg"),
            "-m",
            "opennsfw",
            "--runtime",
            "onnxruntime",
            "-f",
            "jsonl",
            "-o",
            str(records),
            "--embeddings",
            str(vectors),
        ],
    )
    assert result.exit_code == 1
    added = runner.invoke(
        app,
        [
            "index",
            "add",
            "-i",
            str(tmp_path / "idx"),
            "--embeddings",
            str(vectors),
            "--records",
            str(records),
        ],
    )
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["added"] == 3
    with Index.open(tmp_path / "idx", create=False) as store:
        hits = store.search(photos[1], k=1, classifier=opennsfw)
        assert hits[0].entry.source == str(photos[1])


def test_two_writers_lose_nothing(tmp_path, photos, opennsfw):
    """Another process's adds, committed between ours, end up searchable too."""
    folder = tmp_path / "idx"
    first, second = Index.open(folder), Index.open(folder)
    first.add_images(photos[:3], opennsfw)
    first.search(1, k=1)
    second.add_images(photos[3:4], opennsfw)
    second.close()
    first.add_images(photos[4:5], opennsfw)
    first.close()
    with Index.open(folder, create=False) as store:
        assert store.stats()["vectors_in_structure"] == 5
        for entry_id in range(1, 6):
            assert store.search(entry_id, k=1)[0].entry.id == entry_id


def test_saved_structures_never_pair_with_another_database(tmp_path, photos, opennsfw):
    folder = tmp_path / "idx"
    with Index.open(folder) as store:
        store.add_images(photos[:5], opennsfw)
    for database in folder.glob("index.db*"):
        database.unlink()  # a new database beside an old vectors file
    with Index.open(folder) as store:
        store.add_images(photos[5:], opennsfw)
    with Index.open(folder, create=False) as store:
        assert store.stats()["vectors_in_structure"] == len(photos) - 5
        assert [h.entry.id for h in store.search(1, k=1)] == [1]


def test_failed_rebuild_leaves_the_index_usable(index):
    from pixguard import IndexStoreError

    with pytest.raises(IndexStoreError, match="10,000"):
        index.rebuild("ivfpq")
    with pytest.raises(IndexStoreError, match="unknown index kind"):
        index.rebuild("bogus")
    assert index.stats()["kind"] == "flat"
    assert index.search(1, k=1)[0].entry.id == 1


def test_hnsw_search_after_many_removals_still_fills_k(index, edited, opennsfw):
    for copies in edited.values():
        index.add_images(copies, opennsfw)
    index.rebuild("hnsw")
    near_first = [h.entry.id for h in index.search(1, k=20)]
    index.remove(near_first[:15])
    hits = index.search(index.search(near_first[15], k=1)[0].entry.id, k=5)
    assert len(hits) == 5
    assert not set(near_first[:15]) & {h.entry.id for h in hits}


def test_empty_bank_matches_nothing_and_stays_unbound(tmp_path, opennsfw, photos):
    with Index.open(tmp_path / "bank") as bank:
        matches = bank.match(opennsfw.predict(photos[:2]))
        assert [m.matched for m in matches] == [False, False]
        assert bank.model is None


def test_re_adding_a_path_is_not_an_exact_duplicate_of_itself(index, photos, opennsfw):
    index.add_images([photos[0]], opennsfw)
    assert not [g for g in index.dedupe() if g["kind"] == "exact"]


def test_unreadable_files_in_records_are_image_errors_not_missing_entries(tmp_path, photos):
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(b"x")
    records = [
        {"path": str(photos[0]), "model": "m", "label": "sfw", "nsfw_score": 0.1},
        {"path": str(tmp_path / "gone.jpg"), "model": "m", "label": "sfw", "nsfw_score": 0.1},
        {"path": str(tmp_path), "model": "m", "label": "sfw", "nsfw_score": 0.1},  # a folder
    ]
    with Index.open(tmp_path / "index") as index:
        report = index.add_embeddings(vectors, records)
    assert len(report.added) == 1
    codes = [error.code for _, error in report.failed]
    assert codes == ["image_not_found", "image_unreadable"]
    assert "index_entry_not_found" not in json.dumps(report.to_dict())


class _NoEmbeddings:
    """A classifier whose model gives scores but no embedding."""

    name, embedding_dim = "no-embeddings", 8

    def predict(self, sources, batch_size=16):
        from pixguard import Prediction

        return [
            Prediction(source=str(s), model=self.name, threshold=0.5, label="sfw", nsfw_score=0.1)
            for s in sources
        ]


def test_a_prediction_without_embedding_is_reported_with_an_error(tmp_path, photos):
    with Index.open(tmp_path / "index") as index:
        report = index.add_images(photos[:2], _NoEmbeddings())
    assert report.added == []
    assert [error.code for _, error in report.failed] == ["inference_failed"] * 2
    assert report.to_dict()["failed"][0]["code"] == "inference_failed"

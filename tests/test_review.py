"""The review queue: intake through a policy, leases, append-only decisions,
escalation and appeals, retention, and the loop back to fine-tuning."""

from __future__ import annotations

import csv
import json
import sqlite3
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import pixguard
from pixguard import Classifier, Prediction
from pixguard.cli import app
from pixguard.policy import Action, Policy
from pixguard.review import (
    DecisionKind,
    ItemState,
    ReviewQueue,
    export_training_set,
)
from tests.helpers import build_vit_folder, encode, gradient_image

runner = CliRunner()

POLICY = Policy.from_bytes(b"[default]\nreview_from = 0.2\nblock_from = 0.95\n")


def _image(seed: int) -> bytes:
    return encode(gradient_image(48, 40, seed=seed), "PNG")


def _prediction(score: float, source: str = "x.png") -> Prediction:
    return Prediction(
        source=source,
        model="m",
        threshold=0.5,
        label="nsfw" if score >= 0.5 else "sfw",
        nsfw_score=score,
        probabilities={"nsfw": score, "sfw": 1 - score},
    )


def _enqueue(queue: ReviewQueue, seed: int, score: float = 0.6):
    prediction = _prediction(score, f"img{seed}.png")
    decision = POLICY.decide(prediction)
    assert decision.action is Action.review
    return queue.enqueue(_image(seed), prediction, decision)


@pytest.fixture
def queue(tmp_path: Path):
    with ReviewQueue.open(tmp_path / "data", lease_s=60) as q:
        yield q


def test_enqueue_keeps_private_content_addressed_bytes_once(queue, tmp_path):
    first = _enqueue(queue, 1)
    again = _enqueue(queue, 1)
    other = _enqueue(queue, 2)
    assert again.id == first.id  # the same bytes waiting are not queued twice
    assert other.id != first.id
    blob = tmp_path / "data" / "review-images" / first.sha256[:2] / first.sha256
    assert blob.read_bytes() == _image(1)
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data" / "review-images").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data" / "review.db").stat().st_mode) == 0o600
    assert first.suffix == ".png"
    assert first.state is ItemState.pending
    assert first.policy_version == POLICY.version
    assert "review_from" in first.reason
    with pytest.raises(pixguard.ReviewInvalidError, match="only items routed to review"):
        queue.enqueue(_image(3), _prediction(0.1), POLICY.decide(_prediction(0.1)))


def test_claims_are_exclusive_and_leases_expire(tmp_path):
    data = tmp_path / "data"
    with ReviewQueue.open(data, lease_s=0.5) as queue:
        items = [_enqueue(queue, seed) for seed in range(6)]
        alice = queue.claim("alice", limit=4)
        bob = queue.claim("bob", limit=4)
        assert [i.id for i in alice] == [i.id for i in items[:4]]
        assert [i.id for i in bob] == [i.id for i in items[4:]]
        assert all(i.claimed_by == "alice" for i in alice)
        # Claiming again gives alice her own items back, not bob's.
        assert {i.id for i in queue.claim("alice", limit=4)} == {i.id for i in alice}
        with pytest.raises(pixguard.ReviewConflictError, match="not claimed by 'bob'"):
            queue.decide(alice[0].id, "bob", "allow")
        time.sleep(0.6)  # alice's leases run out: her items return to the queue
        taken = queue.claim("carol", limit=6)
        assert {i.id for i in taken} == {i.id for i in items}
        with pytest.raises(pixguard.ReviewConflictError):
            queue.decide(alice[0].id, "alice", "allow")


def test_two_reviewers_never_hold_the_same_item_under_contention(tmp_path):
    data = tmp_path / "data"
    with ReviewQueue.open(data) as queue:
        for seed in range(40):
            _enqueue(queue, seed)
    claimed: dict[str, list[int]] = {}

    def work(name: str) -> None:
        # Each reviewer has its own connection, as separate service workers would.
        with ReviewQueue.open(data) as own:
            ids = []
            while batch := own.claim(name, limit=3):
                for item in batch:
                    own.decide(item.id, name, "allow")
                    ids.append(item.id)
            claimed[name] = ids

    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    everything = [i for ids in claimed.values() for i in ids]
    assert len(everything) == 40
    assert len(set(everything)) == 40


def test_decisions_are_append_only_and_undo_is_a_new_decision(queue, tmp_path):
    item = _enqueue(queue, 1, score=0.7)  # the model says nsfw
    [claimed] = queue.claim("alice")
    allowed = queue.decide(claimed.id, "alice", "allow", note="a painting")
    assert allowed.decision is DecisionKind.allow
    assert allowed.overturned is True
    assert allowed.nsfw_score == pytest.approx(0.7)
    assert allowed.note == "a painting"
    assert queue.item(item.id).state is ItemState.decided
    with pytest.raises(pixguard.ReviewConflictError, match="decided"):
        queue.decide(item.id, "alice", "remove")
    with pytest.raises(pixguard.ReviewConflictError, match="another reviewer"):
        queue.undo(allowed.id, "bob")

    undo = queue.undo(allowed.id, "alice")
    assert undo.decision is DecisionKind.undo
    assert undo.undoes == allowed.id
    back = queue.item(item.id)
    assert back.state is ItemState.pending
    assert back.claimed_by == "alice"  # ready to be decided again
    removed = queue.decide(item.id, "alice", "remove")
    assert removed.overturned is False
    history = [d.decision for d in queue.decisions(item_id=item.id)]
    assert history == [DecisionKind.allow, DecisionKind.undo, DecisionKind.remove]
    with pytest.raises(pixguard.ReviewConflictError, match="not the latest"):
        queue.undo(allowed.id, "alice")

    db = sqlite3.connect(tmp_path / "data" / "review.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE decisions SET decision = 'allow'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM decisions")
    db.close()


def test_skip_releases_the_item_to_others_only(queue):
    item = _enqueue(queue, 1)
    [claimed] = queue.claim("alice")
    queue.decide(claimed.id, "alice", "skip")
    assert queue.claim("alice") == []
    assert [i.id for i in queue.claim("bob")] == [item.id]


def test_escalation_is_for_admins_and_appeals_reopen_decided_items(queue):
    item = _enqueue(queue, 1)
    [claimed] = queue.claim("alice")
    queue.decide(claimed.id, "alice", "escalate", note="unsure")
    assert queue.item(item.id).state is ItemState.escalated
    assert queue.claim("alice") == []  # gone from the reviewers' queue
    [escalated] = queue.claim("root", queue=ItemState.escalated)
    assert escalated.id == item.id
    with pytest.raises(pixguard.ReviewConflictError, match="only admins"):
        queue.decide(item.id, "root", "remove")
    removed = queue.decide(item.id, "root", "remove", admin=True)

    appeal = queue.appeal(sha256=item.sha256, appellant="uploader", note="it is art")
    assert appeal.decision is DecisionKind.appeal
    assert queue.item(item.id).state is ItemState.escalated
    [again] = queue.claim("root", queue=ItemState.escalated)
    queue.decide(again.id, "root", "allow", admin=True)
    assert queue.appeal(decision_id=removed.id, appellant="x").item_id == item.id
    with pytest.raises(pixguard.ReviewConflictError, match="only decided items"):
        queue.appeal(decision_id=removed.id, appellant="x")  # already escalated again
    with pytest.raises(pixguard.ReviewItemNotFoundError):
        queue.appeal(sha256="0" * 64, appellant="x")
    with pytest.raises(pixguard.ReviewInvalidError):
        queue.appeal(appellant="x")


def test_bulk_decides_each_item_on_its_own(queue):
    items = [_enqueue(queue, seed) for seed in range(5)]
    claimed = queue.claim("alice", limit=3)
    results = queue.bulk_decide(
        "alice",
        [(i.id, "remove", None) for i in claimed]
        + [(items[4].id, "allow", None), (999, "allow", None)],
    )
    assert [type(r).__name__ for r in results] == [
        "DecisionRecord",
        "DecisionRecord",
        "DecisionRecord",
        "ReviewConflictError",
        "ReviewItemNotFoundError",
    ]
    with pytest.raises(pixguard.ReviewInvalidError, match="1 to 1000"):
        queue.bulk_decide("alice", [(items[3].id, "allow", None)] * 1001)
    with pytest.raises(pixguard.ReviewInvalidError, match="decision must be one of"):
        queue.bulk_decide("alice", [(items[3].id, "undo", None)])


def test_stats_count_depth_kinds_agreement_and_age(queue):
    for seed, score in enumerate([0.7, 0.7, 0.3, 0.3, 0.6]):
        _enqueue(queue, seed, score=score)
    claimed = queue.claim("alice", limit=4)
    queue.decide(claimed[0].id, "alice", "remove")  # agrees (model nsfw)
    queue.decide(claimed[1].id, "alice", "allow")  # overturns
    queue.decide(claimed[2].id, "alice", "allow")  # agrees (model sfw)
    queue.decide(claimed[3].id, "alice", "escalate")
    stats = queue.stats()
    assert stats["depth"] == 1
    assert stats["escalated"] == 1
    assert stats["decided"] == 3
    assert stats["decisions"]["allow"] == 2
    assert stats["decisions"]["remove"] == 1
    assert stats["decisions"]["escalate"] == 1
    assert stats["agreement"] == pytest.approx(2 / 3)
    assert stats["oldest_age_s"] >= 0
    assert sum(b["decisions"].get("allow", 0) for b in stats["timeline"]) == 2


def test_bytes_go_once_decided_unless_kept_and_at_the_retention_limit(tmp_path):
    data = tmp_path / "data"
    with ReviewQueue.open(data, keep_for_training=False) as queue:
        item = _enqueue(queue, 1)
        twin_source = _enqueue(queue, 2)
        [a, b] = queue.claim("alice", limit=2)
        queue.decide(a.id, "alice", "allow")
        assert queue.read_bytes(queue.item(item.id)) is None
        assert not (data / "review-images" / item.sha256[:2] / item.sha256).exists()
        with pytest.raises(pixguard.ReviewConflictError, match="no longer stored"):
            queue.image(item.id)
        queue.decide(b.id, "alice", "remove", keep=True)  # kept for training
        assert queue.image(twin_source.id)[1] == _image(2)
    with ReviewQueue.open(data, retention_s=3600) as queue:
        waiting = _enqueue(queue, 3)
        assert queue.purge(now=time.time() + 7200) == 2
        assert queue.item(waiting.id).state is ItemState.expired
        assert queue.item(twin_source.id).state is ItemState.decided
        assert not any(p.is_file() for p in (data / "review-images").rglob("*"))
        assert queue.claim("alice") == []


def test_a_long_running_queue_purges_as_it_goes(tmp_path):
    with ReviewQueue.open(tmp_path / "data", retention_s=1.0) as queue:
        old = _enqueue(queue, 1)
        time.sleep(1.2)  # past the retention limit, and past the purge interval
        assert [i.id for i in queue.claim("alice")] != [old.id]
        assert queue.item(old.id).state is ItemState.expired
        assert queue.read_bytes(queue.item(old.id)) is None


def test_cli_add_queues_only_what_the_policy_routes_to_review(tmp_path, photos, tiny_vit_folder):
    scores = {
        p: s.nsfw_score
        for p, s in zip(
            photos[:5], Classifier.load(tiny_vit_folder).predict(photos[:5]), strict=True
        )
    }
    ordered = sorted(scores.values())
    policy = tmp_path / "p.toml"
    policy.write_text(
        f"[default]\nreview_from = {(ordered[0] + ordered[1]) / 2}\n"
        f"block_from = {(ordered[3] + ordered[4]) / 2}\n"
    )
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 nope")
    args = ["review", "add", *map(str, photos[:5]), str(broken), "--policy", str(policy)]
    args += ["--model", str(tiny_vit_folder), "--data-dir", str(tmp_path / "d"), "-f", "jsonl"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["action"] for r in rows].count("review") == 3
    assert rows[-1]["action"] == "block"
    assert rows[-1]["item_id"] is None
    for row in rows:
        assert (row["item_id"] is not None) == (row["action"] == "review")
    with ReviewQueue.open(tmp_path / "d") as queue:
        assert queue.stats()["depth"] == 3
        [first] = queue.claim("alice")
        assert first.source in {r["path"] for r in rows if r["action"] == "review"}
        assert queue.image(first.id)[1] == Path(first.source).read_bytes()
    table = runner.invoke(app, [*args[:-2], "-f", "table"])
    assert "queued for review" in table.stdout
    stats = runner.invoke(app, ["review", "stats", "--data-dir", str(tmp_path / "d")])
    assert json.loads(stats.stdout)["depth"] == 3  # the same bytes are not queued twice
    missing = [a if a != str(policy) else str(tmp_path / "none.toml") for a in args]
    bad = runner.invoke(app, missing)
    assert bad.exit_code == 2
    assert "policy_not_found" in bad.stderr


def test_export_refuses_a_non_empty_folder(queue, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(pixguard.ReviewInvalidError, match="new or empty"):
        export_training_set(queue, tmp_path / "full")


# --- the whole loop -------------------------------------------------------------------


def _texture(grainy: bool, rng: np.random.Generator, size: int = 64) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack(
        [
            127 + 100 * np.sin(rng.uniform(0.02, 0.08) * (xx * np.cos(a) + yy * np.sin(a)))
            for a in rng.uniform(0, np.pi, 3)
        ],
        axis=2,
    )
    if grainy:
        checker = ((xx // 2 + yy // 2) % 2)[..., None]
        base = base + (checker * 2 - 1) * rng.uniform(50, 90)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def test_the_loop_classify_queue_decide_export_finetune_evaluate(tmp_path):
    base = build_vit_folder(
        tmp_path / "base", model_args={"depth": 2, "img_size": 64, "global_pool": "avg"}, seed=0
    )
    rng = np.random.default_rng(1)
    uploads, holdout = tmp_path / "uploads", tmp_path / "holdout"
    uploads.mkdir()
    truth = {}
    for i in range(60):
        grainy = i % 2 == 0
        name = f"{i:03d}.png"
        _texture(grainy, rng).save(uploads / name)
        truth[name] = grainy
    for label, grainy in (("nsfw", True), ("sfw", False)):
        (holdout / label).mkdir(parents=True)
        for i in range(20):
            _texture(grainy, rng).save(holdout / label / f"{i:03d}.png")
    policy = tmp_path / "policy.toml"
    policy.write_text("[default]\nreview_from = 0.0\nblock_from = 1.0\n")  # people see all
    data = tmp_path / "data"

    # 1. classify and queue through the policy
    added = runner.invoke(
        app,
        [
            *("review", "add", str(uploads), "--policy", str(policy), "--model", str(base)),
            *("--data-dir", str(data), "--runtime", "torch", "-f", "jsonl"),
        ],
    )
    assert added.exit_code == 0, added.output
    rows = [json.loads(line) for line in added.stdout.splitlines()]
    assert len(rows) == 60
    assert all(r["action"] == "review" and r["item_id"] for r in rows)

    # 2. people decide: grainy textures are removed, smooth ones allowed
    with ReviewQueue.open(data) as queue:
        while batch := queue.claim("alice", limit=25):
            for item in batch:
                decision = "remove" if truth[Path(item.source).name] else "allow"
                queue.decide(item.id, "alice", decision)
        model_labels = {Path(i.source).name: i.model_label for i, _ in queue.iter_final()}

    # 3. export as an ImageFolder with a manifest
    exported = tmp_path / "reviewed"
    result = runner.invoke(
        app, ["review", "export", "--output", str(exported), "--data-dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"nsfw": 30, "sfw": 30}
    with (exported / "manifest.csv").open() as handle:
        manifest = list(csv.DictReader(handle))
    assert len(manifest) == 60
    for row in manifest:
        assert (exported / row["path"]).is_file()
        assert row["reviewer"] == "alice"
        assert float(row["nsfw_score"]) >= 0
        human_nsfw = row["label"] == "nsfw"
        assert row["overturned"] == str(human_nsfw != (row["model_label"] == "nsfw"))
    assert {row["model_label"] for row in manifest} <= set(model_labels.values())

    # 4. fine-tune on the export as it is, then evaluate on held-out images
    model = tmp_path / "model"
    finetuned = runner.invoke(
        app,
        [
            *("finetune", str(exported), "--base", str(base), "--mode", "linear"),
            *("--nsfw-class", "nsfw", "-o", str(model), "--epochs", "10"),
        ],
    )
    assert finetuned.exit_code == 0, finetuned.output
    evaluate_args = ["evaluate", str(holdout), "--nsfw-class", "nsfw", "--runtime", "torch"]
    evaluate_args += ["--format", "json"]
    after = runner.invoke(app, [*evaluate_args, "-m", str(model)])
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout)["accuracy"] >= 0.9

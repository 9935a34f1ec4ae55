"""Roles, per-key isolation and the review queue over HTTP, on a real server process."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from pixguard.cli._serve import KeyRole
from pixguard.serve import KeyStore, Role
from tests.helpers import encode, gradient_image
from tests.test_serve import Server


def _key(data_dir: Path, name: str, role: str | None) -> str:
    command = [
        sys.executable,
        "-m",
        "pixguard",
        "keys",
        "create",
        name,
        "--data-dir",
        str(data_dir),
    ]
    if role is not None:
        command += ["--role", role]
    created = subprocess.run(command, capture_output=True, text=True, check=True)
    row = json.loads(created.stdout)
    assert row["role"] == (role or "client")
    return row["token"]


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _png(seed: int) -> bytes:
    return encode(gradient_image(64, 48, seed=seed), "PNG")


def test_cli_roles_match_the_service_roles():
    assert [r.value for r in KeyRole] == [r.value for r in Role]


def test_keys_made_before_roles_become_clients(tmp_path):
    path = tmp_path / "keys.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE keys (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
        " digest TEXT NOT NULL, created REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("INSERT INTO keys (name, digest, created) VALUES ('old', 'x', 0)")
    db.commit()
    db.close()
    store = KeyStore(path)
    assert store.list()[0].role is Role.client
    key, _ = store.create("boss", "admin")
    assert key.role is Role.admin
    store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_vit_folder):
    tmp = tmp_path_factory.mktemp("review-srv")
    data = tmp / "data"
    tokens = {
        "admin": _key(data, "root", "admin"),
        "r1": _key(data, "rita", "reviewer"),
        "r2": _key(data, "rob", "reviewer"),
        "c1": _key(data, "shop", None),
        "c2": _key(data, "blog", "client"),
    }
    policy = tmp / "policy.toml"
    policy.write_text("[default]\nreview_from = 0.0\nblock_from = 1.0\n")  # people see all
    server = Server(
        tmp,
        "--model",
        str(tiny_vit_folder),
        "--runtime",
        "torch",
        "--auth",
        "on",
        "--policy",
        str(policy),
        env={"PIXGUARD_REVIEW_LEASE_S": "60"},
    )
    yield server, tokens, policy
    assert server.stop()


def test_policy_actions_audit_isolation_and_the_queue(served):
    server, tokens, policy = served
    url = server.url
    version = hashlib.sha256(policy.read_bytes()).hexdigest()
    images = {seed: _png(seed) for seed in range(5)}

    # Clients classify; every result carries the action and goes to the queue.
    for seed in (0, 1, 2):
        body = httpx.post(
            f"{url}/v1/classify",
            content=images[seed],
            headers={"content-type": "image/png", **_auth(tokens["c1"])},
        ).json()
        result = body["results"][0]
        assert result["action"] == "review"
        assert result["policy_version"] == version
        assert result["review_item_id"] >= 1
    files = [("files", (f"{s}.png", images[s], "image/png")) for s in (3, 4)]
    multi = httpx.post(f"{url}/v1/classify", files=files, headers=_auth(tokens["c2"])).json()
    assert [r["action"] for r in multi["results"]] == ["review", "review"]

    # Audit rows: a client sees only its own; an admin sees all, with actions.
    own = httpx.get(f"{url}/v1/decisions", headers=_auth(tokens["c1"])).json()["decisions"]
    assert len(own) == 3
    assert {row["action"] for row in own} == {"review"}
    assert {row["policy_version"] for row in own} == {version}
    other_key = httpx.get(f"{url}/v1/decisions?key_id=999", headers=_auth(tokens["c1"]))
    assert other_key.status_code == 403
    everything = httpx.get(f"{url}/v1/decisions", headers=_auth(tokens["admin"])).json()
    assert len(everything["decisions"]) == 5
    assert (
        len(httpx.get(f"{url}/v1/decisions", headers=_auth(tokens["c2"])).json()["decisions"]) == 2
    )

    # Clients do not work the queue.
    assert httpx.get(f"{url}/v1/review/next", headers=_auth(tokens["c1"])).status_code == 403

    # Two reviewers never get the same item.
    first = httpx.get(f"{url}/v1/review/next?limit=2", headers=_auth(tokens["r1"])).json()
    second = httpx.get(f"{url}/v1/review/next?limit=5", headers=_auth(tokens["r2"])).json()
    mine = [item["id"] for item in first["items"]]
    theirs = [item["id"] for item in second["items"]]
    assert len(mine) == 2
    assert len(theirs) == 3
    assert not set(mine) & set(theirs)
    assert first["items"][0]["claimed_by"] == "rita#2"

    # Images: to whoever holds the item.
    image = httpx.get(f"{url}{first['items'][0]['image_url']}", headers=_auth(tokens["r1"]))
    assert image.status_code == 200
    assert hashlib.sha256(image.content).hexdigest() == first["items"][0]["sha256"]
    assert image.headers["cache-control"] == "no-store"
    assert image.headers["content-type"] == "image/png"
    stolen = httpx.get(f"{url}{first['items'][0]['image_url']}", headers=_auth(tokens["r2"]))
    assert stolen.status_code == 403

    # Decisions, conflicts, escalation.
    a, b = mine
    removed = httpx.post(
        f"{url}/v1/review/{a}",
        json={"decision": "remove", "note": "nope"},
        headers=_auth(tokens["r1"]),
    )
    assert removed.status_code == 200, removed.text
    assert removed.json()["decision"]["reviewer"] == "rita#2"
    taken = httpx.post(
        f"{url}/v1/review/{a}", json={"decision": "allow"}, headers=_auth(tokens["r2"])
    )
    assert taken.status_code == 409
    assert taken.json()["code"] == "review_conflict"
    bad = httpx.post(
        f"{url}/v1/review/{b}", json={"decision": "maybe"}, headers=_auth(tokens["r1"])
    )
    assert bad.status_code == 422
    escalated = httpx.post(
        f"{url}/v1/review/{b}", json={"decision": "escalate"}, headers=_auth(tokens["r1"])
    )
    assert escalated.status_code == 200
    hidden = httpx.get(f"{url}/v1/review/next?queue=escalated", headers=_auth(tokens["r1"]))
    assert hidden.status_code == 403
    admin_queue = httpx.get(
        f"{url}/v1/review/next?queue=escalated", headers=_auth(tokens["admin"])
    ).json()
    assert [item["id"] for item in admin_queue["items"]] == [b]
    assert (
        httpx.post(
            f"{url}/v1/review/{b}", json={"decision": "allow"}, headers=_auth(tokens["admin"])
        ).status_code
        == 200
    )

    # Undo is a new decision; the item comes back to its reviewer.
    undone = httpx.post(
        f"{url}/v1/review/undo",
        json={"decision_id": removed.json()["decision"]["id"]},
        headers=_auth(tokens["r1"]),
    )
    assert undone.status_code == 200, undone.text
    assert undone.json()["decision"]["decision"] == "undo"
    assert undone.json()["item"]["state"] == "pending"
    assert (
        httpx.post(
            f"{url}/v1/review/{a}", json={"decision": "allow"}, headers=_auth(tokens["r1"])
        ).status_code
        == 200
    )

    # Bulk: each entry on its own.
    bulk = httpx.post(
        f"{url}/v1/review/bulk",
        json={"decisions": [{"item_id": i, "decision": "remove"} for i in [*theirs, a]]},
        headers=_auth(tokens["r2"]),
    ).json()
    assert bulk["decided"] == 3
    assert bulk["results"][-1]["error"]["code"] == "review_conflict"
    huge = 2**70  # beyond SQLite's integers: refused as invalid, never a 500
    for method, path, body in (
        ("POST", f"/v1/review/{huge}", {"decision": "allow"}),
        ("GET", f"/v1/review/items/{huge}/image", None),
        ("POST", "/v1/review/undo", {"decision_id": huge}),
        ("POST", "/v1/review/bulk", {"decisions": [{"item_id": huge, "decision": "skip"}]}),
    ):
        answer = httpx.request(method, f"{url}{path}", json=body, headers=_auth(tokens["r2"]))
        assert answer.status_code == 422, (path, answer.text)
    too_many = httpx.post(
        f"{url}/v1/review/bulk",
        json={"decisions": [{"item_id": 1, "decision": "skip"}] * 1001},
        headers=_auth(tokens["r2"]),
    )
    assert too_many.status_code == 422

    stats = httpx.get(f"{url}/v1/review/stats", headers=_auth(tokens["r1"])).json()
    assert stats["depth"] == 0
    assert stats["decided"] == 5
    assert stats["decisions"]["undo"] == 1
    assert stats["final_decisions"] == 5
    assert 0.0 <= stats["agreement"] <= 1.0

    # Appeals: a client appeals only what it submitted.
    sha_c1 = hashlib.sha256(images[0]).hexdigest()
    foreign = httpx.post(f"{url}/v1/appeals", json={"sha256": sha_c1}, headers=_auth(tokens["c2"]))
    assert foreign.status_code == 404
    appealed = httpx.post(
        f"{url}/v1/appeals", json={"sha256": sha_c1, "note": "art"}, headers=_auth(tokens["c1"])
    )
    assert appealed.status_code == 201, appealed.text
    assert appealed.json()["decision"]["decision"] == "appeal"
    both = httpx.post(
        f"{url}/v1/appeals", json={"sha256": sha_c1, "decision_id": 1}, headers=_auth(tokens["c1"])
    )
    assert both.status_code == 422
    back = httpx.get(f"{url}/v1/review/next?queue=escalated", headers=_auth(tokens["admin"])).json()
    assert [item["sha256"] for item in back["items"]] == [sha_c1]


def test_the_explanation_overlay_follows_the_image_route_rules(served):
    server, tokens, _ = served
    url = server.url
    queued = httpx.post(
        f"{url}/v1/classify",
        content=_png(41),
        headers={"content-type": "image/png", **_auth(tokens["c1"])},
    ).json()["results"][0]
    item_id = queued["review_item_id"]
    claimed = httpx.get(f"{url}/v1/review/next", headers=_auth(tokens["r1"])).json()["items"]
    assert [item["id"] for item in claimed] == [item_id]
    path = f"{url}/v1/review/items/{item_id}/explanation"

    assert httpx.get(path, headers=_auth(tokens["c1"])).status_code == 403  # clients
    stolen = httpx.get(path, headers=_auth(tokens["r2"]))  # another reviewer's item
    assert stolen.status_code == 403
    assert stolen.json()["code"] == "forbidden"
    huge = httpx.get(f"{url}/v1/review/items/{2**70}/explanation", headers=_auth(tokens["r1"]))
    assert huge.status_code == 422
    assert (
        httpx.get(
            f"{url}/v1/review/items/999999/explanation", headers=_auth(tokens["r1"])
        ).status_code
        == 404
    )

    for token in (tokens["r1"], tokens["admin"]):
        overlay = httpx.get(path, headers=_auth(token), timeout=60)
        assert overlay.status_code == 200, overlay.text
        assert overlay.headers["content-type"] == "image/png"
        assert overlay.headers["cache-control"] == "no-store"
        drawn = Image.open(io.BytesIO(overlay.content))
        assert drawn.format == "PNG"
        plain = Image.open(io.BytesIO(_png(41))).convert("RGB")
        assert drawn.size == plain.size
        # The heat is drawn over the image: not the stored bytes, and not the same pixels.
        assert overlay.content != _png(41)
        difference = np.abs(np.asarray(drawn, np.int16) - np.asarray(plain, np.int16))
        assert difference.max() > 0

    # Stored bytes that no longer decode (a damaged disk): a typed 422, never a 500.
    blob = server.data / "review-images" / queued["sha256"][:2] / queued["sha256"]
    blob.write_bytes(_png(41)[:40])
    failed = httpx.get(path, headers=_auth(tokens["r1"]), timeout=60)
    assert failed.status_code == 422, failed.text
    assert failed.json()["code"] == "explanation_failed"
    assert f"item {item_id}" in failed.json()["message"]

    decided = httpx.post(
        f"{url}/v1/review/{item_id}", json={"decision": "allow"}, headers=_auth(tokens["r1"])
    )
    assert decided.status_code == 200


def test_metrics_docs_and_openapi_follow_auth(served):
    server, tokens, _ = served
    for path in ("/metrics", "/docs", "/openapi.json"):
        assert httpx.get(f"{server.url}{path}").status_code == 401, path
        assert httpx.get(f"{server.url}{path}", headers=_auth(tokens["c1"])).status_code == 200
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    index_add = httpx.post(
        f"{server.url}/v1/index/add",
        content=_png(1),
        headers={"content-type": "image/png", **_auth(tokens["r1"])},
    )
    assert index_add.status_code == 403  # adding to the index is for admins


def test_serve_refuses_a_bad_policy_before_loading(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text("[default]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pixguard", "serve", "--policy", str(policy), "--model", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "policy_invalid" in result.stderr

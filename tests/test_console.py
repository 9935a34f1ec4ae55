"""The web console in a real browser: Playwright driving Debian's Chromium against a
real ``pixguard serve`` process on loopback.

Every page visited is checked for browser console errors (CSP violations included);
screenshots go to ``test-artifacts/console/`` (``PIXGUARD_TEST_ARTIFACTS`` to move it).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from pixguard import Classifier
from pixguard.testing import tiny_sd3_pipeline
from tests.helpers import build_tiny_sd3_controlnet, encode, gradient_image
from tests.test_serve import Server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("PIXGUARD_TEST_ARTIFACTS", "test-artifacts")) / "console"
POOL_SIZE = 40


def _key(data_dir: Path, name: str, role: str) -> str:
    created = subprocess.run(
        [
            *(sys.executable, "-m", "pixguard", "keys", "create", name),
            *("--role", role, "--data-dir", str(data_dir)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(created.stdout)["token"]


def _png(seed: int) -> bytes:
    return encode(gradient_image(96 + seed % 7 * 8, 80 + seed % 5 * 8, seed=seed), "PNG")


class Watch:
    """Collects a page's console errors and uncaught exceptions; ``expect`` lets
    through the messages a step is meant to cause (a deliberate 401 page)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self._expected: list[re.Pattern[str]] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if any(p.search(message.text) for p in self._expected):
            return
        self.errors.append(f"{message.text} @ {message.location.get('url')}")

    def expect(self, pattern: str) -> None:
        self._expected.append(re.compile(pattern))

    def check(self) -> None:
        assert not self.errors, self.errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory, tiny_vit_folder, photos):
    """A server with keys of every role and a policy that sends about two thirds of a
    pool of images to review; ``flagged`` are those images' bytes."""
    tmp = tmp_path_factory.mktemp("console")
    data = tmp / "data"
    tokens = {
        "admin": _key(data, "ada", "admin"),
        "rev1": _key(data, "rita", "reviewer"),
        "rev2": _key(data, "rob", "reviewer"),
        "client": _key(data, "shop", "client"),
        "other": _key(data, "blog", "client"),
    }
    classifier = Classifier.load(tiny_vit_folder, runtime="torch")
    pool = [_png(seed) for seed in range(POOL_SIZE)]
    scores = np.array([p.nsfw_score for p in classifier.predict(pool)])
    photo_scores = {
        p: s.nsfw_score for p, s in zip(photos, classifier.predict(photos), strict=True)
    }
    lowest_photo = min(photo_scores, key=photo_scores.get)
    # Review from just above the least NSFW-looking photo: it is allowed, the rest flagged.
    review_from = round(photo_scores[lowest_photo] + 0.005, 2)
    policy = tmp / "policy.toml"
    policy.write_text(f"[default]\nreview_from = {review_from}\nblock_from = 1.0\n")
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
        "--index",
        str(tmp / "index"),
        env={"PIXGUARD_RATE_LIMIT_PER_MINUTE": "100000"},
    )
    flagged = [data for data, score in zip(pool, scores, strict=True) if score >= review_from]
    assert len(flagged) >= 20
    yield {
        "server": server,
        "tokens": tokens,
        "flagged": flagged,
        "pool": pool,
        "photos": photos,
        "allowed_photo": lowest_photo,
        "review_from": review_from,
    }
    assert server.stop()


def _classify(console, token: str, images: list[bytes]) -> list[dict]:
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    response = httpx.post(
        f"{console['server'].url}/v1/classify",
        files=files,
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]


def _context(browser: Browser) -> BrowserContext:
    return browser.new_context(viewport={"width": 1366, "height": 860})


def _sign_in(page: Page, url: str, token: str, expect_path: str = "/moderate") -> None:
    page.goto(f"{url}/login?next={expect_path}")
    page.fill("#key", token)
    page.click("#sign-in")
    page.wait_for_url(f"**{expect_path}")


def _shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_sign_in_wrong_key_and_sign_out(browser, console):
    url = console["server"].url
    context = _context(browser)
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"{url}/moderate")
    assert page.url.startswith(f"{url}/login")
    _shot(page, "login")

    watch.expect("status of 401")  # the wrong key's page is answered 401, on purpose
    page.fill("#key", "pgk_1_not-the-key")
    page.click("#sign-in")
    assert "not valid" in page.inner_text("#login-error")
    assert context.cookies() == [c for c in context.cookies() if c["name"] != "pixguard_session"]

    page.fill("#key", console["tokens"]["client"])
    page.click("#sign-in")
    page.wait_for_url("**/moderate")
    assert page.inner_text("#who") == "shop · client"
    cookie = next(c for c in context.cookies() if c["name"] == "pixguard_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable from scripts
    # A client sees no Review or Escalations link.
    assert page.locator("nav a", has_text="Review").count() == 0

    page.click("#sign-out")
    page.wait_for_url("**/login")
    page.goto(f"{url}/stats")
    assert page.url.startswith(f"{url}/login")

    # Revoking a key ends its console sessions.
    data_dir = console["server"].data
    token = _key(data_dir, "temp", "reviewer")
    _sign_in(page, url, token, "/review")
    key_id = token.split("_")[1]
    subprocess.run(
        [sys.executable, "-m", "pixguard", "keys", "revoke", key_id, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
    )
    page.goto(f"{url}/review")
    assert page.url.startswith(f"{url}/login")
    watch.check()
    context.close()


def test_moderate_shows_cards_and_blurs_flagged_images(browser, console, tmp_path):
    url = console["server"].url
    context = _context(browser)
    page = context.new_page()
    watch = Watch(page)
    _sign_in(page, url, console["tokens"]["client"])
    allowed = console["allowed_photo"]
    flagged_photos = [p for p in console["photos"] if p != allowed][:3]
    uploads = []
    for path in [allowed, *flagged_photos]:
        target = tmp_path / path.name
        shutil.copy(path, target)
        uploads.append(target)
    # One of them is already in the index: its card lists it as the most similar item.
    indexed = httpx.post(
        f"{url}/v1/index/add",
        content=flagged_photos[1].read_bytes(),
        headers={
            "authorization": f"Bearer {console['tokens']['admin']}",
            "content-type": "image/png",
        },
    )
    assert indexed.status_code == 200, indexed.text
    page.set_input_files("#files", [str(p) for p in uploads])
    page.wait_for_function("() => document.querySelectorAll('#cards .result').length === 4")

    allowed_card = page.locator(f'.result[data-filename="{allowed.name}"]')
    assert "allow" in allowed_card.inner_text()
    assert "blurred" not in allowed_card.locator(".thumb").get_attribute("class")
    for path in flagged_photos:
        card = page.locator(f'.result[data-filename="{path.name}"]')
        assert "review" in card.inner_text()
        assert card.locator("meter").get_attribute("value")
        assert "blurred" in card.locator(".thumb").get_attribute("class")
    similar = page.locator(f'.result[data-filename="{flagged_photos[1].name}"] .similar li')
    similar.first.wait_for()
    assert similar.first.inner_text().startswith("#1 1.0000")
    _shot(page, "moderate")

    # Revealed by a click; hidden again with Space on the focused thumbnail.
    thumb = page.locator(f'.result[data-filename="{flagged_photos[0].name}"] .thumb')
    thumb.click()
    assert "blurred" not in thumb.get_attribute("class")
    thumb.focus()
    page.keyboard.press("Space")
    assert "blurred" in thumb.get_attribute("class")
    # Grayscale option.
    page.check("#grayscale")
    assert "grayscale" in page.get_attribute("body", "class")
    watch.check()
    context.close()


def test_two_reviewers_work_the_queue_by_keyboard_and_never_share_an_item(browser, console):
    url, tokens = console["server"].url, console["tokens"]
    _classify(console, tokens["client"], console["flagged"][:8])
    contexts = [_context(browser), _context(browser)]
    pages = [c.new_page() for c in contexts]
    watches = [Watch(p) for p in pages]
    for page, name in zip(pages, ("rev1", "rev2"), strict=True):
        _sign_in(page, url, tokens[name], "/review")
        page.wait_for_selector("#item:not([hidden]), #empty:not([hidden])")

    def current(page: Page) -> str | None:
        if page.is_visible("#empty"):
            return None
        return page.inner_text("#item-id")

    first = pages[0]
    assert "blurred" in first.get_attribute("#reveal", "class")
    assert int(first.inner_text("#remaining")) >= 1
    _shot(first, "review")
    # The explanation overlay sits inside the same blurred button, and is asked for
    # only when the item is first revealed (an item decided unseen costs none).
    assert first.get_attribute("#explain-image", "src") is None
    assert "Reveal" in first.inner_text("#explain-note")
    first.keyboard.press("Space")
    assert "blurred" not in first.get_attribute("#reveal", "class")
    first.wait_for_function(
        "() => { const i = document.getElementById('explain-image');"
        " return !i.hidden && i.complete && i.naturalWidth > 0; }"
    )
    assert first.get_attribute("#explain-image", "src").startswith("blob:")
    assert first.is_hidden("#explain-note")
    assert first.evaluate(
        "() => getComputedStyle(document.getElementById('explain-image')).filter"
    ) in ("none", "")
    assert first.evaluate("() => document.getElementById('explain-image').naturalWidth") > 0
    _shot(first, "review-explained")
    first.keyboard.press("Space")
    assert "blur" in first.evaluate(
        "() => getComputedStyle(document.getElementById('explain-image')).filter"
    )
    assert "blurred" in first.get_attribute("#reveal", "class")
    first.keyboard.press("?")
    assert first.is_visible("#help")
    first.keyboard.press("?")
    assert not first.is_visible("#help")

    # Undo with Z: the item comes back, then is decided again.
    undone_id = current(first)
    first.keyboard.press("a")
    first.wait_for_function(
        f"() => document.getElementById('item-id').textContent !== '{undone_id}'"
        " || !document.getElementById('empty').hidden"
    )
    first.keyboard.press("z")
    first.wait_for_function(
        f"() => document.getElementById('item-id').textContent === '{undone_id}'"
    )

    seen: list[list[str]] = [[], []]
    keys = ["a", "r"]
    while True:
        ids = [current(page) for page in pages]
        if ids[0] is not None and ids[1] is not None:
            assert ids[0] != ids[1], "two reviewers were shown the same item"
        if ids == [None, None]:
            break
        for position, (page, item_id) in enumerate(zip(pages, ids, strict=True)):
            if item_id is None:
                continue
            seen[position].append(item_id)
            page.keyboard.press(keys[position])
            page.wait_for_function(
                f"() => document.getElementById('item-id').textContent !== '{item_id}'"
                " || !document.getElementById('empty').hidden"
            )
        for page in pages:
            # A reviewer whose queue ran dry asks again, as reloading the page would.
            if page.is_visible("#empty"):
                page.reload()
                page.wait_for_selector("#item:not([hidden]), #empty:not([hidden])")
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) + len(seen[1]) >= 8
    stats = httpx.get(
        f"{url}/v1/review/stats", headers={"authorization": f"Bearer {tokens['admin']}"}
    ).json()
    assert stats["depth"] == 0
    assert stats["decisions"]["undo"] >= 1
    for watch in watches:
        watch.check()
    for context in contexts:
        context.close()


def test_the_grid_decides_several_items_at_once(browser, console):
    url, tokens = console["server"].url, console["tokens"]
    results = _classify(console, tokens["client"], console["flagged"][14:18])
    queued = {f"#{r['review_item_id']}" for r in results}
    context = _context(browser)
    page = context.new_page()
    watch = Watch(page)
    _sign_in(page, url, tokens["rev2"], "/review")
    page.wait_for_selector("#item:not([hidden])")
    page.click("#mode")
    cards = page.locator("#grid .result")
    page.wait_for_function("() => document.querySelectorAll('#grid .result').length === 4")
    ids = {text.split(" ")[0] for text in cards.locator("p:not(.hint)").all_inner_texts()}
    assert ids == queued
    assert cards.locator(".thumb.blurred").count() == 4
    _shot(page, "review-grid")

    page.check("#grid .result:nth-child(1) .select")
    page.check("#grid .result:nth-child(2) .select")
    page.click("#grid-remove")
    page.wait_for_function("() => document.querySelectorAll('#grid .result').length === 2")
    for _ in range(2):
        thumb = page.locator("#grid .result .thumb").first
        thumb.focus()
        page.keyboard.press("Space")
        assert "blurred" not in thumb.get_attribute("class")
        count = cards.count()
        page.keyboard.press("a")
        page.wait_for_function(
            f"() => document.querySelectorAll('#grid .result').length === {count - 1}"
        )
    assert page.is_visible("#empty")
    # Z undoes the last decision in the grid too: the item comes back to decide again.
    page.keyboard.press("z")
    page.wait_for_function("() => document.querySelectorAll('#grid .result').length === 1")
    page.locator("#grid .result .thumb").first.focus()
    page.keyboard.press("r")
    page.wait_for_function("() => document.querySelectorAll('#grid .result').length === 0")
    decisions = httpx.get(
        f"{url}/v1/review/stats", headers={"authorization": f"Bearer {tokens['admin']}"}
    ).json()
    assert decisions["depth"] == 0
    watch.check()
    context.close()


def test_escalation_is_visible_to_an_admin_and_not_to_a_reviewer(browser, console):
    url, tokens = console["server"].url, console["tokens"]
    [result] = _classify(console, tokens["client"], [console["flagged"][10]])
    assert result["action"] == "review"
    reviewer = _context(browser)
    page = reviewer.new_page()
    watch = Watch(page)
    _sign_in(page, url, tokens["rev1"], "/review")
    page.wait_for_selector("#item:not([hidden])")
    assert page.inner_text("#item-id") == f"#{result['review_item_id']}"
    page.keyboard.press("e")
    page.wait_for_selector("#empty:not([hidden])")
    assert page.locator("nav a", has_text="Escalations").count() == 0
    watch.expect("status of 403")
    page.goto(f"{url}/escalations")
    assert "needs a admin key" in page.inner_text("main")
    watch.check()
    reviewer.close()

    admin = _context(browser)
    page = admin.new_page()
    watch = Watch(page)
    _sign_in(page, url, tokens["admin"], "/escalations")
    page.wait_for_selector("#item:not([hidden])")
    assert page.inner_text("#item-id") == f"#{result['review_item_id']}"
    assert page.locator("#escalate").count() == 0
    _shot(page, "escalations")
    page.keyboard.press("r")
    page.wait_for_selector("#empty:not([hidden])")
    watch.check()
    admin.close()


def test_csrf_is_refused(browser, console):
    url, tokens = console["server"].url, console["tokens"]
    [result] = _classify(console, tokens["client"], [console["flagged"][11]])
    context = _context(browser)
    page = context.new_page()
    watch = Watch(page)
    _sign_in(page, url, tokens["rev2"], "/review")
    page.wait_for_selector("#item:not([hidden])")
    item = result["review_item_id"]
    watch.expect("status of 403")
    # The session cookie alone is not enough for a write: the CSRF header is needed.
    status = page.evaluate(
        """async (item) => (await fetch(`/v1/review/${item}`, {method: 'POST',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({decision: 'allow'})})).status""",
        item,
    )
    assert status == 403
    refused = page.request.post(
        f"{url}/v1/review/{item}",
        data={"decision": "allow"},
        headers={"x-csrf-token": "forged"},
    )
    assert refused.status == 403
    assert refused.json()["code"] == "csrf_failed"
    token = page.get_attribute('meta[name="csrf-token"]', "content")
    accepted = page.request.post(
        f"{url}/v1/review/{item}", data={"decision": "allow"}, headers={"x-csrf-token": token}
    )
    assert accepted.status == 200, accepted.text()
    forged_logout = page.request.post(f"{url}/logout", form={"csrf": "forged"})
    assert forged_logout.status == 403
    login_without_csrf = page.request.post(f"{url}/login", form={"key": tokens["rev2"]})
    assert login_without_csrf.status == 403
    watch.check()
    context.close()


def test_decisions_page_filters_pages_and_exports_csv(browser, console):
    url, tokens = console["server"].url, console["tokens"]
    _classify(console, tokens["other"], console["flagged"][12:14])
    for start in (0, 20):  # enough rows for two pages
        _classify(console, tokens["admin"], console["pool"][start : start + 20])
    context = _context(browser)
    page = context.new_page()
    watch = Watch(page)
    _sign_in(page, url, tokens["admin"], "/decisions")
    everything = httpx.get(
        f"{url}/v1/decisions?limit=1000", headers={"authorization": f"Bearer {tokens['admin']}"}
    ).json()["decisions"]
    assert len(everything) > 50  # more than one page
    assert page.locator("#decisions tbody tr").count() == 50
    page.click("#next-page")
    page.wait_for_url("**after_id=*")
    assert page.locator("#decisions tbody tr").count() == min(50, len(everything) - 50)

    page.goto(f"{url}/decisions")
    page.select_option("#f-action", "review")
    page.click("button:has-text('Filter')")
    page.wait_for_url("**action=review*")
    actions = page.locator("#decisions tbody tr td:nth-child(6)").all_inner_texts()
    assert set(actions) == {"review"}
    with page.expect_download() as download:
        page.click("#csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    expected = [row for row in everything if row["action"] == "review"]
    assert [int(r["id"]) for r in rows] == [row["id"] for row in expected]
    assert {r["action"] for r in rows} == {"review"}
    _shot(page, "decisions")
    page.goto(f"{url}/stats")
    assert page.locator("#actions-chart rect").count() >= 1
    assert "%" in page.inner_text("#agreement")
    _shot(page, "stats")
    watch.check()
    context.close()

    # A client sees its own rows only, in the page and in the CSV.
    client = _context(browser)
    page = client.new_page()
    watch = Watch(page)
    _sign_in(page, url, tokens["other"], "/decisions")
    keys = set(page.locator("#decisions tbody tr td:nth-child(3)").all_inner_texts())
    assert keys == {"5"}
    with page.expect_download() as download:
        page.click("#csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 2
    assert {r["key_id"] for r in rows} == {"5"}
    assert page.locator("#review-chart").count() == 0  # no review stats for clients
    page.goto(f"{url}/stats")
    watch.check()
    client.close()


def test_api_docs_load_swagger_ui_from_the_server(browser, console):
    url = console["server"].url
    context = _context(browser)
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"{url}/docs")  # signed out: to the sign-in page, then back
    assert page.url == f"{url}/login?next=/docs"
    page.fill("#key", console["tokens"]["client"])
    page.click("#sign-in")
    page.wait_for_url("**/docs")
    page.get_by_text("/v1/review/next").first.wait_for()
    assert all(r.startswith(url) or r.startswith(("blob:", "data:")) for r in requests), requests
    csp = page.request.get(f"{url}/docs").headers["content-security-policy"]
    assert "default-src 'self'" in csp
    watch.check()
    context.close()


def _generating_server(tmp_path: Path, model: Path, pipeline: Path, env: dict[str, str]) -> Server:
    """A real `pixguard serve` with keys required and generation on ``pipeline``."""
    return Server(
        tmp_path,
        "--model",
        str(model),
        "--runtime",
        "torch",
        "--auth",
        "on",
        "--generate-variant",
        str(pipeline),
        env=env,
    )


def test_generate_page_shows_progress_and_a_blocked_result(browser, tmp_path, tiny_vit_folder):
    pipeline = tiny_sd3_pipeline(tmp_path / "sd3")
    data = tmp_path / "data"
    token = _key(data, "maker", "client")
    other = _key(data, "someone", "client")
    # Threshold 0: every generated image scores at least that and is blocked.
    server = _generating_server(tmp_path, tiny_vit_folder, pipeline, {"PIXGUARD_THRESHOLD": "0.0"})
    try:
        context = _context(browser)
        page = context.new_page()
        watch = Watch(page)
        _sign_in(page, server.url, token, "/generate")
        page.fill("#prompt", "a lighthouse at dusk")
        page.fill("#steps", "3")
        page.fill("#width", "32")
        page.fill("#height", "32")
        page.fill("#seed", "7")
        with page.expect_request("**/v1/jobs/*/events") as events:
            page.click("#generate")
        job_id = events.value.url.split("/v1/jobs/")[1].split("/")[0]
        page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('done')",
            timeout=120_000,
        )
        assert page.get_attribute("#progress", "value") == "3"
        assert page.get_attribute("#progress", "max") == "3"
        blocked = page.locator("#results .blocked")
        assert blocked.count() == 1
        assert "Blocked by the safety gate" in blocked.inner_text()
        assert page.locator("#results img").count() == 0  # never pixels
        _shot(page, "generate")
        watch.check()
        context.close()
        # The job is its owner's: another client's key cannot see it.
        headers = {"authorization": f"Bearer {other}"}
        assert httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers).status_code == 404
        mine = httpx.get(
            f"{server.url}/v1/jobs/{job_id}", headers={"authorization": f"Bearer {token}"}
        )
        assert mine.json()["status"] == "done"
    finally:
        assert server.stop()


def test_generate_page_sends_controlnet_options(browser, tmp_path, tiny_vit_folder):
    # ControlNet residuals reach every block but the last: the tiny pipeline needs 2.
    pipeline = tiny_sd3_pipeline(tmp_path / "sd3", num_layers=2)
    controlnet = build_tiny_sd3_controlnet(tmp_path / "controlnet")
    data = tmp_path / "data"
    token = _key(data, "maker", "client")
    server = _generating_server(
        tmp_path,
        tiny_vit_folder,
        pipeline,
        {
            "PIXGUARD_GENERATE_CONTROL_MODELS": json.dumps({"canny": str(controlnet)}),
            # The random model flags at random: the gate's explicit opt-out shows the
            # image, so the test sees the controlled run finish with pixels.
            "PIXGUARD_THRESHOLD": "1.0",
            "PIXGUARD_GENERATE_SAFETY_ACTION": "allow-flagged",
        },
    )
    control_file = tmp_path / "edges.png"
    gradient_image(32, 32, seed=5).save(control_file)
    try:
        context = _context(browser)
        page = context.new_page()
        watch = Watch(page)
        _sign_in(page, server.url, token, "/generate")
        page.fill("#prompt", "a lighthouse at dusk")
        page.fill("#steps", "2")
        page.fill("#width", "32")
        page.fill("#height", "32")
        page.fill("#seed", "7")
        page.select_option("#control", "canny")
        # Without a control image the page says so and sends nothing.
        page.click("#generate")
        page.wait_for_function(
            "() => document.getElementById('notice').textContent.includes('control image')"
        )
        page.set_input_files("#control-image", str(control_file))
        page.fill("#control-scale", "0.5")
        with page.expect_request("**/v1/generate") as sent:
            page.click("#generate")
        body = sent.value.post_data_json
        assert body["control"] == "canny"
        assert body["control_scale"] == 0.5
        assert base64.b64decode(body["control_image"]) == control_file.read_bytes()
        page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('done')",
            timeout=120_000,
        )
        assert page.locator("#results img").count() == 1
        watch.check()
        context.close()
    finally:
        assert server.stop()


def test_screenshots_are_real_pngs():
    # Runs last in this file: the pages above wrote them.
    for name in (
        "login",
        "moderate",
        "review",
        "review-explained",
        "escalations",
        "decisions",
        "stats",
        "generate",
    ):
        data = (ARTIFACTS / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG"), name
        assert hashlib.sha256(data).hexdigest()

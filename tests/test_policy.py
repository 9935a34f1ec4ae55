"""Policies: TOML to validated bands, predictions to actions, and `classify --policy`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pixguard
from pixguard import Classifier, Prediction
from pixguard.cli import app
from pixguard.policy import Action, Decision, Policy

runner = CliRunner()

EXAMPLE = b"""
[default]                # applies to every model without its own table
review_from = 0.3        # score >= review_from -> review
block_from = 0.9         # score >= block_from -> block
bank_match = "block"     # or "review"
[models."marqo-nsfw-384"]
review_from = 0.4
"""


def _prediction(
    score: float | None, model: str = "opennsfw", probabilities: dict[str, float] | None = None
) -> Prediction:
    return Prediction(
        source="x.jpg",
        model=model,
        threshold=0.5,
        label=None if score is None else ("nsfw" if score >= 0.5 else "sfw"),
        nsfw_score=score,
        probabilities=probabilities or ({} if score is None else {"nsfw": score, "sfw": 1 - score}),
    )


def test_example_from_the_issue_bands_and_model_override():
    policy = Policy.from_bytes(EXAMPLE)
    assert policy.version == hashlib.sha256(EXAMPLE).hexdigest()
    decide = policy.decide
    assert decide(_prediction(0.29)).action is Action.allow
    assert decide(_prediction(0.30)).action is Action.review
    assert decide(_prediction(0.89)).action is Action.review
    assert decide(_prediction(0.90)).action is Action.block
    # The model table overrides review_from and inherits block_from.
    assert decide(_prediction(0.35, model="marqo-nsfw-384")).action is Action.allow
    assert decide(_prediction(0.40, model="marqo-nsfw-384")).action is Action.review
    assert decide(_prediction(0.95, model="marqo-nsfw-384")).action is Action.block
    decision = decide(_prediction(0.95, model="marqo-nsfw-384"))
    assert decision == Decision(Action.block, decision.reason, policy.version)
    assert "block_from 0.9" in decision.reason
    assert "marqo-nsfw-384" in decision.reason
    assert decision.to_dict()["action"] == "block"


def test_a_model_folder_matches_its_table_by_folder_name():
    policy = Policy.from_bytes(
        b'[default]\nreview_from = 0.5\n[models."mine"]\nreview_from = 0.1\n'
    )
    assert policy.rule_for("/srv/models/mine") == "mine"
    assert policy.rule_for("/srv/models/other") == "default"
    assert policy.decide(_prediction(0.2, model="/srv/models/mine")).action is Action.review
    assert policy.decide(_prediction(0.2, model="/srv/models/other")).action is Action.allow


def test_bank_match_blocks_or_reviews_whatever_the_score():
    blocking = Policy.from_bytes(EXAMPLE)
    decision = blocking.decide(_prediction(0.01), bank_match=True)
    assert decision.action is Action.block
    assert "bank" in decision.reason
    reviewing = Policy.from_bytes(b'[default]\nreview_from = 0.3\nbank_match = "review"\n')
    assert reviewing.decide(_prediction(0.01), bank_match=True).action is Action.review
    # The more severe of score and bank wins.
    assert reviewing.decide(_prediction(0.5), bank_match=False).action is Action.review
    scored_block = Policy.from_bytes(b'[default]\nblock_from = 0.8\nbank_match = "review"\n')
    assert scored_block.decide(_prediction(0.85), bank_match=True).action is Action.block


def test_per_label_rules_for_multi_class_models():
    policy = Policy.from_bytes(
        b"""
[default]
review_from = 0.5
block_from = 0.95
[models."multi".labels.porn]
review_from = 0.2
block_from = 0.6
[models."multi".labels.hentai]
block_from = 0.7
"""
    )
    probabilities = {"porn": 0.25, "hentai": 0.05, "sexy": 0.1, "neutral": 0.6}
    decision = policy.decide(_prediction(0.3, model="multi", probabilities=probabilities))
    assert decision.action is Action.review
    assert "p(porn)" in decision.reason
    probabilities = {"porn": 0.05, "hentai": 0.75, "sexy": 0.0, "neutral": 0.2}
    decision = policy.decide(_prediction(0.8, model="multi", probabilities=probabilities))
    assert decision.action is Action.block
    assert "p(hentai)" in decision.reason
    probabilities = {"porn": 0.01, "hentai": 0.01, "sexy": 0.0, "neutral": 0.98}
    assert policy.decide(_prediction(0.02, "multi", probabilities)).action is Action.allow
    policy.check_labels("multi", ["porn", "hentai", "sexy", "neutral"])
    with pytest.raises(pixguard.PolicyLabelError, match="hentai"):
        policy.check_labels("multi", ["porn", "neutral"])
    with pytest.raises(pixguard.PolicyLabelError):
        policy.decide(_prediction(0.3, model="multi", probabilities={"nsfw": 0.3, "sfw": 0.7}))


def test_an_unclassified_input_is_blocked_not_allowed():
    policy = Policy.from_bytes(EXAMPLE)
    failed = Prediction(
        source="bad.jpg",
        model="opennsfw",
        threshold=0.5,
        error=pixguard.NotAnImageError("not an image", source="bad.jpg"),
    )
    decision = policy.decide(failed)
    assert decision.action is Action.block
    assert "image_not_an_image" in decision.reason


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        (b"[default\nreview_from=0.3", pixguard.PolicyInvalidError, "TOML"),
        (b"\xff\xfe", pixguard.PolicyInvalidError, "UTF-8"),
        (b'[models."x"]\nreview_from = 0.3\n', pixguard.PolicyInvalidError, "[default]"),
        (b"[default]\nreview_from = 0.6\nblock_from = 0.5\n", pixguard.PolicyInvalidError, ">="),
        (
            b'[default]\nreview_from = 0.3\nblock_from = 0.5\n[models."m"]\nreview_from = 0.7\n',
            pixguard.PolicyInvalidError,
            "inherited",
        ),
        (b"[default]\nreview_from = 1.5\n", pixguard.InvalidThresholdError, "outside [0, 1]"),
        (b"[default]\nreview_from = -0.1\n", pixguard.InvalidThresholdError, "outside"),
        (b"[default]\nreview_from = nan\n", pixguard.InvalidThresholdError, "outside"),
        (b'[default]\nreview_from = "0.3"\n', pixguard.PolicyInvalidError, "number"),
        (b"[default]\nreview_from = true\n", pixguard.PolicyInvalidError, "number"),
        (b"[default]\nreview-from = 0.3\n", pixguard.PolicyInvalidError, "unknown keys"),
        (b"[default]\nreview_from = 0.3\n[extra]\n", pixguard.PolicyInvalidError, "unknown"),
        (
            b'[default]\nreview_from = 0.3\nbank_match = "allow"\n',
            pixguard.PolicyInvalidError,
            "bank_match",
        ),
        (b"[default]\n", pixguard.PolicyInvalidError, "allow_everything"),
        (b'[default]\nbank_match = "block"\n', pixguard.PolicyInvalidError, "allows every"),
        (
            b'[default]\nreview_from = 0.3\n[models."m".labels.porn]\n',
            pixguard.PolicyInvalidError,
            "needs review_from",
        ),
        (
            b"allow_everything = 1\n[default]\nreview_from = 0.3\n",
            pixguard.PolicyInvalidError,
            "true or false",
        ),
    ],
)
def test_bad_policies_get_typed_errors(text, error, words):
    with pytest.raises(error) as caught:
        Policy.from_bytes(text, source="p.toml")
    assert isinstance(caught.value, pixguard.PolicyError)
    assert words in str(caught.value)
    assert str(caught.value).startswith("p.toml: ")


def test_allow_everything_must_be_said_explicitly():
    policy = Policy.from_bytes(b"allow_everything = true\n[default]\n")
    assert policy.allow_everything
    assert policy.decide(_prediction(1.0)).action is Action.allow
    # A bank match still acts: it is not a score band.
    assert policy.decide(_prediction(1.0), bank_match=True).action is Action.block


def test_load_reads_files_and_names_missing_ones(tmp_path: Path):
    path = tmp_path / "policy.toml"
    path.write_bytes(EXAMPLE)
    policy = Policy.load(path)
    assert policy.version == hashlib.sha256(EXAMPLE).hexdigest()
    assert policy.source == str(path)
    with pytest.raises(pixguard.PolicyNotFoundError, match="no such policy file"):
        Policy.load(tmp_path / "missing.toml")
    with pytest.raises(pixguard.PolicyNotFoundError):
        Policy.load(tmp_path)  # a folder
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(pixguard.PolicyInvalidError, match="larger than"):
        Policy.load(big)


def test_the_version_changes_with_the_bytes():
    assert Policy.from_bytes(EXAMPLE).version != Policy.from_bytes(EXAMPLE + b"\n").version


# --- pixguard classify --policy ---------------------------------------------------


@pytest.fixture
def policy_file(tmp_path: Path, photos: list[Path], tiny_vit_folder: Path) -> tuple[Path, dict]:
    """A policy whose bands split the sample photos' real scores into all three actions."""
    scores = sorted(p.nsfw_score for p in Classifier.load(tiny_vit_folder).predict(photos[:5]))
    review_from = (scores[0] + scores[1]) / 2
    block_from = (scores[3] + scores[4]) / 2
    path = tmp_path / "policy.toml"
    path.write_text(f"[default]\nreview_from = {review_from}\nblock_from = {block_from}\n")
    return path, {"review_from": review_from, "block_from": block_from}


def _expected_action(score: float, bands: dict) -> str:
    if score >= bands["block_from"]:
        return "block"
    return "review" if score >= bands["review_from"] else "allow"


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_classify_policy_adds_action_to_machine_formats(
    fmt, policy_file, photos, tiny_vit_folder, tmp_path
):
    path, bands = policy_file
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    inputs = [str(p) for p in photos[:5]] + [str(bad)]
    args = ["classify", *inputs, "--model", str(tiny_vit_folder), "--format", fmt]
    result = runner.invoke(app, [*args, "--policy", str(path)])
    assert result.exit_code == 1, result.output
    if fmt == "jsonl":
        rows = [json.loads(line) for line in result.stdout.splitlines()]
    elif fmt == "json":
        rows = json.loads(result.stdout)
    else:
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
    version = hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(rows) == 6
    for row in rows[:5]:
        assert row["action"] == _expected_action(float(row["nsfw_score"]), bands)
        assert row["policy_version"] == version
        assert row["reason"]
    assert {row["action"] for row in rows[:5]} == {"allow", "review", "block"}
    assert rows[5]["action"] == "block"
    assert "image_" in rows[5]["reason"]


def test_classify_policy_table_shows_actions(policy_file, photos, tiny_vit_folder):
    path, _ = policy_file
    result = runner.invoke(
        app,
        ["classify", *map(str, photos[:5]), "--model", str(tiny_vit_folder), "--policy", str(path)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "action" in result.stdout
    for action in ("allow", "review", "block"):
        assert action in result.stdout
    version = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"policy {version[:12]}" in result.stdout


def test_classify_without_policy_has_no_action(photos, tiny_vit_folder):
    result = runner.invoke(
        app, ["classify", str(photos[0]), "--model", str(tiny_vit_folder), "--format", "jsonl"]
    )
    assert result.exit_code == 0, result.output
    assert "action" not in json.loads(result.stdout)


def test_classify_refuses_a_bad_policy_before_loading_anything(tmp_path, photos):
    path = tmp_path / "p.toml"
    path.write_text("[default]\nreview_from = 0.9\nblock_from = 0.2\n")
    result = runner.invoke(
        app, ["classify", str(photos[0]), "--model", "no-such-model", "--policy", str(path)]
    )
    assert result.exit_code == 2
    assert "policy_invalid" in result.stderr
    missing = runner.invoke(
        app, ["classify", str(photos[0]), "--policy", str(tmp_path / "nope.toml")]
    )
    assert missing.exit_code == 2
    assert "policy_not_found" in missing.stderr


def test_classify_refuses_label_rules_the_model_lacks(tmp_path, photos, tiny_vit_folder):
    path = tmp_path / "p.toml"
    path.write_text(
        f'[default]\nreview_from = 0.5\n[models."{tiny_vit_folder.name}".labels.porn]\n'
        "block_from = 0.5\n"
    )
    result = runner.invoke(
        app, ["classify", str(photos[0]), "--model", str(tiny_vit_folder), "--policy", str(path)]
    )
    assert result.exit_code == 2
    assert "policy_label_unknown" in result.stderr


def test_the_readme_policy_block_is_valid():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Policies.*?```toml\n(.*?)```", readme, flags=re.DOTALL).group(1)
    policy = Policy.from_bytes(block.encode())
    assert policy.rule_for("marqo-nsfw-384") == "marqo-nsfw-384"
    assert policy.decide(_prediction(0.35, model="marqo-nsfw-384")).action is Action.allow
    porn = {"porn": 0.65, "neutral": 0.35}
    assert policy.decide(_prediction(0.65, "my-policy", porn)).action is Action.block

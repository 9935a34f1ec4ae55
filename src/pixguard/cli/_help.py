"""``pixguard --help``: commands in the order a user meets them, each with an example."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from typer.core import TyperGroup

if TYPE_CHECKING:  # the click that typer runs on (typer vendors it)
    from typer._click import Command, Context

__all__ = ["COMMAND_EXAMPLES", "CommandsInUserOrder"]

#: Every command, in the order a user meets it, with a one-line example. A command
#: missing here is listed after these (the tests ask for an example for each).
COMMAND_EXAMPLES = {
    "classify": "pixguard classify photos/ --model opennsfw",
    "redact": "pixguard redact uploads/ --output redacted/ --model opennsfw",
    "models": "pixguard models",
    "index": "pixguard index add photos/ --index my-index --model opennsfw",
    "review": "pixguard review add uploads/ --policy policy.toml --model opennsfw",
    "scan": "pixguard scan s3://bucket/uploads --output scan-out/ --model opennsfw",
    "finetune": (
        "pixguard finetune data/ --base marqo-nsfw-384 --nsfw-class nsfw --output my-policy"
    ),
    "evaluate": "pixguard evaluate holdout/ --model my-policy --nsfw-class nsfw",
    "calibrate": (
        "pixguard calibrate holdout/ --model my-policy --nsfw-class nsfw --target-precision 0.98"
    ),
    "export": "pixguard export --model opennsfw --format onnx --output exported/opennsfw",
    "serve": "pixguard serve --model opennsfw --port 8000",
    "keys": "pixguard keys create uploader",
    "generate": 'pixguard generate "a lighthouse at dusk" --variant sd3.5-medium --seed 7',
    "lora": "pixguard lora train captioned/ --variant sd3.5-medium --output my-lora",
}


class CommandsInUserOrder(TyperGroup):
    """Lists commands in :data:`COMMAND_EXAMPLES` order, each summary followed by
    its example; commands not named there follow in registration order."""

    def list_commands(self, ctx: Context) -> list[str]:
        registered = super().list_commands(ctx)
        known = [name for name in COMMAND_EXAMPLES if name in registered]
        return known + [name for name in registered if name not in COMMAND_EXAMPLES]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None and cmd_name in COMMAND_EXAMPLES and command.short_help is None:
            summary = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
            # One line break (kept in rich markup mode) puts the example under the summary.
            command.short_help = f"{summary}\n[dim]e.g.[/] {escape(COMMAND_EXAMPLES[cmd_name])}"
        return command

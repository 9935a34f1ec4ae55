"""``pixguard index ...``: build and query an embedding index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from .._exceptions import PixguardError
from ..classify import Classifier
from ..index import INDEX_KINDS, Index, migrate
from ..index import cluster as cluster_index
from ..models import DEFAULT_MODEL
from ._common import EXIT_SOME_INPUTS_FAILED, fail, print_table, progress_bar, stderr
from ._inputs import expand_paths

__all__ = ["index_app"]

index_app = typer.Typer(
    help="Similarity search, near-duplicates, clustering and known-bad banks.", no_args_is_help=True
)

IndexOption = Annotated[
    str,
    typer.Option(
        "--index",
        "-i",
        help="The index: a folder (FAISS), milvus:FILE.db or milvus://HOST:PORT/COLLECTION.",
    ),
]
FormatOption = Annotated[str, typer.Option("--format", "-f", help="table or json.")]


def _open(folder: str, *, create: bool = False, kind: str = "auto") -> Index:
    try:
        return Index.open(folder, create=create, kind=kind)
    except PixguardError as exc:
        raise fail(exc) from None


def _classifier(index: Index, model: str | None, runtime: str) -> Classifier:
    try:
        return Classifier.load(model or index.model or DEFAULT_MODEL, runtime=runtime)
    except PixguardError as exc:
        raise fail(exc) from None


def _emit(rows: Any, output_format: str, render: Any) -> None:
    if output_format == "json":
        typer.echo(json.dumps(rows, indent=2))
    elif output_format == "table":
        print_table(render(rows))
    else:
        raise typer.BadParameter("must be table or json", param_hint="--format")


@index_app.command("add")
def add(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Images or folders (or nothing, with --embeddings).")
    ] = None,
    index: IndexOption = "index",
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Default: the index's model, else marqo-nsfw-384."),
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r")] = False,
    tags: Annotated[str, typer.Option(help="Comma-separated tags for every entry added.")] = "",
    embeddings: Annotated[
        Path | None, typer.Option(help="Add `classify --embeddings` output instead of images.")
    ] = None,
    records: Annotated[
        Path | None, typer.Option(help="The JSONL written by the same classify run.")
    ] = None,
    kind: Annotated[str, typer.Option(help=f"auto, {', '.join(INDEX_KINDS)}.")] = "auto",
    bank_threshold: Annotated[
        float | None,
        typer.Option(help="Similarity at which this index, used as a bank, flags a match."),
    ] = None,
    runtime: Annotated[str, typer.Option(help="Runtime for embedding images.")] = "auto",
) -> None:
    """Add images (embedded once; the same bytes again are a no-op) or precomputed embeddings."""
    tag_list = tuple(t.strip() for t in tags.split(",") if t.strip())
    with _open(index, create=True, kind=kind) as store:
        try:
            if bank_threshold is not None:
                store.bank_threshold = bank_threshold
            if embeddings is not None:
                if records is None:
                    raise typer.BadParameter("--embeddings needs --records (the classify JSONL)")
                rows = [
                    json.loads(line)
                    for line in records.read_text(encoding="utf-8").splitlines()
                    if line.strip()
                ]
                report = store.add_embeddings(
                    np.load(embeddings, allow_pickle=False), rows, tags=tag_list
                )
            else:
                sources = expand_paths(paths or [], recursive=recursive)
                if not sources:
                    raise typer.BadParameter(
                        "no image files in the given paths", param_hint="PATHS"
                    )
                classifier = _classifier(store, model, runtime)
                with progress_bar(stderr.is_terminal and len(sources) > 1, "indexing") as bar:
                    task = bar.add_task("index", total=len(sources))
                    report = store.add_images(
                        sources, classifier, tags=tag_list, on_result=lambda _: bar.advance(task)
                    )
        except PixguardError as exc:
            raise fail(exc) from None
    summary = report.to_dict()
    typer.echo(json.dumps(summary))
    for failure in summary["failed"]:
        stderr.print(f"[yellow]{escape(failure['source'])}[/]: {escape(failure['code'])}")
    if summary["failed"]:
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)


def _hits_table(rows: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in ("id", "similarity", "source", "label", "score", "tags"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["id"]),
            f"{row['similarity']:.4f}",
            escape(str(row["source"])),
            str(row["label"]),
            "" if row["score"] is None else f"{row['score']:.4f}",
            ",".join(row["tags"]),
        )
    return table


@index_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="An image path, or id:N for an entry.")],
    index: IndexOption = "index",
    k: Annotated[int, typer.Option("-k", min=1, help="How many results.")] = 10,
    min_similarity: Annotated[
        float | None, typer.Option(help="Drop results below this cosine similarity.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    runtime: Annotated[str, typer.Option()] = "auto",
    output_format: FormatOption = "table",
) -> None:
    """Nearest entries to an image or an entry."""
    with _open(index) as store:
        try:
            if query.startswith("id:"):
                hits = store.search(int(query[3:]), k=k, min_similarity=min_similarity)
            else:
                hits = store.search(
                    Path(query),
                    k=k,
                    min_similarity=min_similarity,
                    classifier=_classifier(store, model, runtime),
                )
        except ValueError:
            raise typer.BadParameter("id:N needs a number", param_hint="QUERY") from None
        except PixguardError as exc:
            raise fail(exc) from None
    _emit([hit.to_dict() for hit in hits], output_format, _hits_table)


@index_app.command("remove")
def remove(
    ids: Annotated[list[int], typer.Argument(help="Entry ids.")],
    index: IndexOption = "index",
) -> None:
    """Remove entries by id (exit 1 when some ids were not there)."""
    with _open(index) as store:
        try:
            removed = store.remove(ids)
        except PixguardError as exc:
            raise fail(exc) from None
    typer.echo(json.dumps({"removed": removed, "not_found": len(set(ids)) - removed}))
    if removed < len(set(ids)):
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)


@index_app.command("stats")
def stats(index: IndexOption = "index", output_format: FormatOption = "table") -> None:
    """What the index holds and how it was built."""
    with _open(index) as store:
        try:
            data = store.stats()
        except PixguardError as exc:
            raise fail(exc) from None

    def render(row: dict[str, Any]) -> Table:
        table = Table(show_header=False)
        for key, value in row.items():
            table.add_row(key, escape(json.dumps(value) if isinstance(value, dict) else str(value)))
        return table

    _emit(data, output_format, render)


@index_app.command("dedupe")
def dedupe(
    index: IndexOption = "index",
    threshold: Annotated[
        float, typer.Option(help="Cosine similarity that makes two entries near-duplicates.")
    ] = 0.95,
    output_format: FormatOption = "json",
) -> None:
    """Groups of near-duplicates, and exact duplicates (same bytes under several names)."""
    with _open(index) as store:
        try:
            groups = store.dedupe(threshold)
        except PixguardError as exc:
            raise fail(exc) from None

    def render(rows: list[dict[str, Any]]) -> Table:
        table = Table()
        for column in ("kind", "entries", "sources"):
            table.add_column(column)
        for row in rows:
            sources = [e["source"] for e in row["entries"]] + row.get("also_added_as", [])
            table.add_row(
                row["kind"],
                ",".join(str(e["id"]) for e in row["entries"]),
                escape("\n".join(map(str, sources))),
            )
        return table

    _emit(groups, output_format, render)


@index_app.command("cluster")
def cluster(
    index: IndexOption = "index",
    k: Annotated[int, typer.Option("-k", min=1, help="Number of clusters.")] = 8,
    flagged: Annotated[bool, typer.Option(help="Cluster only entries labelled nsfw.")] = False,
    sheets: Annotated[
        Path | None, typer.Option(help="Write a contact-sheet PNG per cluster here.")
    ] = None,
    output_format: FormatOption = "table",
) -> None:
    """k-means over the embeddings: cluster sizes and representative images."""
    with _open(index) as store:
        try:
            clusters = cluster_index(store, k, flagged_only=flagged, sheets=sheets)
        except PixguardError as exc:
            raise fail(exc) from None

    def render(rows: list[dict[str, Any]]) -> Table:
        table = Table()
        for column in ("cluster", "size", "representatives", "contact sheet"):
            table.add_column(column)
        for row in rows:
            reps = "\n".join(escape(str(r["source"])) for r in row["representatives"][:3])
            table.add_row(
                str(row["cluster"]), str(row["size"]), reps, escape(str(row["contact_sheet"] or ""))
            )
        return table

    _emit([c.to_dict() for c in clusters], output_format, render)


@index_app.command("rebuild")
def rebuild(
    index: IndexOption = "index",
    kind: Annotated[
        str | None, typer.Option(help=f"Switch to {', '.join(INDEX_KINDS)} (or auto).")
    ] = None,
) -> None:
    """Rebuild the FAISS structure from the database (after many removals, or to change kind)."""
    with _open(index) as store:
        try:
            store.rebuild(kind)
        except PixguardError as exc:
            raise fail(exc) from None
        typer.echo(json.dumps(store.stats()))


@index_app.command("migrate")
def migrate_command(
    source: Annotated[str, typer.Option("--from", help="The index to copy (folder or URI).")],
    target: Annotated[
        str,
        typer.Option("--to", help="Where to copy it: milvus:FILE.db, milvus://..., or a folder."),
    ],
) -> None:
    """Copy an index (entries, vectors, aliases, bank threshold) to another store.

    Rerunning after a stop skips what the target already holds.
    """
    with _open(source) as origin, _open(target, create=True) as destination:
        try:
            total = origin.stats()["entries"]
            with progress_bar(stderr.is_terminal and total > 1, "migrating") as bar:
                task = bar.add_task("migrate", total=total)
                added = migrate(origin, destination, on_progress=lambda n: bar.advance(task, n))
        except PixguardError as exc:
            raise fail(exc) from None
        typer.echo(json.dumps({"added": added, "target": destination.stats()}))

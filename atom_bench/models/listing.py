"""The registry as a table (``atom-bench models``): what each model can do and its shipped weights.

Every string that comes from a registration (names, descriptions) is rendered as plain text,
never as rich markup: a description such as ``"[bold]x[/]"`` is shown as written.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from atom_bench.errors import ModelError
from atom_bench.models.registry import ModelEntry, list_models
from atom_bench.models.weights import Weights


def _claim(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def _weights_cell(weights: Weights | None) -> str:
    """Coarse validation top-1 of shipped weights (``yes`` when unrecorded), ``-`` without any."""
    if weights is None:
        return "-"
    try:
        scores = weights.validation_top1
    except ModelError:  # declared but absent or unreadable: say so rather than fail the listing
        return "missing"
    return "yes" if scores is None else f"{scores[0]:.3f}"


def models_table(entries: Sequence[ModelEntry] | None = None) -> Group:
    """A rich table of ``entries`` (default: every registered model), then one line per description.

    It fits an 80-column terminal: capabilities and the shipped weights' coarse validation top-1
    per track in the table; the descriptions (and any cube-size limit) below it.
    """
    from atom_bench.core.tracks import TRACK_NAMES

    entries = list_models() if entries is None else entries
    tracks = list(TRACK_NAMES) + sorted({w.track for e in entries for w in e.weights} - set(TRACK_NAMES))
    table = Table(
        title="registered models", box=box.SIMPLE_HEAD,
        caption="per track: validation top-1 (coarse) of the shipped weights, from the weights file; - none",
    )  # fmt: skip
    table.add_column("name", no_wrap=True)
    for column in ("trainable", "needs counts", "uses volume"):
        table.add_column(column, min_width=max(len(word) for word in column.split()))  # headers wrap, words stay whole
    for track in tracks:
        table.add_column(track, justify="right", no_wrap=True)
    for entry in entries:
        capabilities = entry.capabilities
        cells = [entry.name, _claim(capabilities.trainable), _claim(capabilities.needs_train_counts), _claim(capabilities.uses_volume)]
        table.add_row(*(Text(cell) for cell in [*cells, *(_weights_cell(entry.weights_for(track)) for track in tracks)]))
    return Group(table, *(_description(entry) for entry in entries))


def _description(entry: ModelEntry) -> Text:
    largest = entry.capabilities.max_volume_size
    limit = f" (cubes up to {largest}^3)" if largest is not None else ""
    return Text.assemble((entry.name, "bold"), f"{limit}: ", entry.description)

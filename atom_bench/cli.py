"""The ``atom-bench`` command line: a thin typer layer over the Python API.

Every command calls one API function and renders its result with rich. User mistakes raise
:class:`~atom_bench.errors.AtomBenchError`; :func:`main` prints its one-line message and exits
with code 2, without a traceback.
"""

from __future__ import annotations

import gc
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from atom_bench import __version__
from atom_bench.errors import AtomBenchError

# typer 0.29 parses with its own copy of click (``typer._click``): its errors are not click's, so
# take the exception classes from the module that defines the parser's own BadParameter.
_PARSER = sys.modules[typer.BadParameter.__module__]
_EXITS = tuple({typer.Exit, click.exceptions.Exit})
_ABORTS = tuple({typer.Abort, click.exceptions.Abort})

app = typer.Typer(
    help="ATOM-Bench: locate 2D slices in 3D medical volumes. Build, download and score benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)  # long paths stay on one line (grep-able)
err_console = Console(stderr=True)

RootOpt = Annotated[
    Optional[Path],
    typer.Option("--root", help="Benchmark directory (default: $ATOM_BENCH_DATA, else the embedded atom-mini)."),
]


def _say(verb: str, rest: str) -> None:
    """A success line: the verb in green, the rest (paths, names: user data) as plain text."""
    console.print(Text.assemble((verb, "green"), " ", rest), highlight=False)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,  # an error after it stays the one line on stderr
    )  # fmt: skip


class _Command(TyperCommand):
    """Every command: ``--help`` is a flag, shown without a value placeholder like the others."""

    def get_help_option(self, ctx: click.Context):  # the parser's own Option class (typer._click)
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _ListsRegisteredModels(_Command):
    """A command whose ``--help`` ends with the registered model names.

    Found only when help is asked for: importing every model package costs seconds, which no
    other invocation should pay."""

    def get_help(self, ctx: click.Context) -> str:
        from atom_bench.models.registry import list_models

        self.epilog = "Registered models: " + ", ".join(entry.name for entry in list_models()) + "."
        return super().get_help(ctx)


@app.command(cls=_Command)
def build(
    volumes: Annotated[Path, typer.Option("--volumes", help="Folder of NIfTI/MGH files, or a CSV with path, subject, modality, group.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (new or empty; or an earlier build with --overwrite).")],
    preset: Annotated[str, typer.Option(help="Samples per volume: standard or atom-mini (atom_bench.data.build.PRESETS).")] = "standard",
    track: Annotated[Optional[list[str]], typer.Option("--track", help="Track(s) to build (repeatable; default all).")] = None,
    size: Annotated[Optional[int], typer.Option(help="Cube side S for easy/hard/histology (16..256).")] = None,
    slice_size: Annotated[Optional[int], typer.Option(help="Square slice side in pixels.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 2406,
    workers: Annotated[int, typer.Option(min=1, help="Volumes prepared in parallel.")] = 1,
    frame: Annotated[Optional[int], typer.Option(min=0, help="Volume of each 4D series to use (0-based).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Benchmark name (default: the --out folder name).")] = None,
    withhold_test_labels: Annotated[bool, typer.Option(metavar="", help="Keep test labels out of --out (written to --labels-out).")] = False,
    labels_out: Annotated[Optional[Path], typer.Option(help="Where withheld labels go (default <out>-labels).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar="", help="Replace --out (and --labels-out) if they hold an earlier build.")] = False,
) -> None:
    """Build a benchmark (all tracks and splits) from real volumes."""
    from atom_bench.core.tracks import TRACK_NAMES
    from atom_bench.data.build import BuildConfig, build_benchmark, build_warnings, check_outputs, labels_folder, preset_counts
    from atom_bench.data.sources import read_volume_sources

    tracks = tuple(track) if track else TRACK_NAMES
    config = BuildConfig(
        name=name or out.name, tracks=tracks, size=size, slice_size=slice_size, seed=seed,
        counts=preset_counts(preset), withhold_test_labels=withhold_test_labels,
    )  # fmt: skip
    config.specs()  # validates tracks and sizes before any work
    sources = read_volume_sources(volumes, seed, frame)
    labels_dir = labels_folder(out, labels_out) if withhold_test_labels else None
    check_outputs([volumes, *(Path(s.path) for s in sources)], out, labels_dir, overwrite)  # before the progress bar
    with _progress() as progress:
        task = progress.add_task("building", total=len(sources))
        manifest = build_benchmark(
            sources, out, config, workers=workers, labels_out=labels_out, overwrite=overwrite,
            on_volume=lambda s: progress.update(task, advance=1, description=f"built {s.volume_id}"),
        )  # fmt: skip
    total = sum(s["num_samples"] for t in manifest["tracks"].values() for s in t["splits"].values())
    _say("built", f"{out}: {len(sources)} volumes, {total} samples, {len(manifest['files'])} files")
    for warning in build_warnings(manifest):
        err_console.print(Text.assemble(("warning: ", "yellow"), warning), highlight=False, soft_wrap=True)


@app.command(cls=_Command)
def info(
    root: Annotated[Optional[Path], typer.Argument(help="Benchmark directory (default: the embedded atom-mini).")] = None,
    verify: Annotated[bool, typer.Option(metavar="", help="Check every file against the manifest's sha256.")] = True,
) -> None:
    """Tracks, splits, sample and volume counts, and checksums of a benchmark."""
    from atom_bench.core.tracks import SPLITS
    from atom_bench.data.benchmark import Benchmark

    bench = Benchmark.open(root)
    manifest = bench.manifest
    checked = bench.verify() if verify else 0
    console.print(Text.assemble(
        (bench.name, "bold"),
        f" version {bench.revision} at {bench.root}\n"
        f"built by atom-bench {manifest['toolkit_version']}, seed {manifest['build']['seed']}, manifest sha256 {bench.hash}"
        + (f", {checked} files verified" if verify else ""),
    ), highlight=False)  # fmt: skip
    table = Table(title="samples (volumes)")
    table.add_column("track")
    table.add_column("cube")
    table.add_column("slice")
    for split in SPLITS:
        table.add_column(split, justify="right")
    for track, t in manifest["tracks"].items():
        cells = [f"{t['splits'][s]['num_samples']} ({len(t['splits'][s]['volumes'])})" for s in SPLITS]
        table.add_row(Text(track), f"{t['size']}^3", "x".join(map(str, t["slice_shape"])), *cells)
    console.print(table)
    volumes = Table(title="volumes")
    for column in ("volume_id", "subject", "modality", "group", "source"):
        volumes.add_column(column)
    for v in manifest["volumes"]:
        volumes.add_row(*(Text(str(v[c])) for c in ("volume_id", "subject", "modality", "group", "source")))
    console.print(volumes)


@app.command(cls=_Command)
def download(
    repo: Annotated[Optional[str], typer.Option(help="Hub dataset repository id.")] = None,
    revision: Annotated[Optional[str], typer.Option(help="Tag, branch or commit sha to pin.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Local directory (default: the Hugging Face cache).")] = None,
    token: Annotated[Optional[str], typer.Option(help="Hub token (default: $HF_TOKEN or the saved login).")] = None,
) -> None:
    """Download a benchmark from the Hugging Face Hub and verify its checksums."""
    from atom_bench.data import hub

    path = hub.download(repo or hub.DEFAULT_REPO, revision or hub.DEFAULT_REVISION, out, token=token)
    _say("downloaded", f"{repo or hub.DEFAULT_REPO}@{revision or hub.DEFAULT_REVISION} to {path} (checksums verified)")


@app.command(cls=_Command)
def publish(
    path: Annotated[Path, typer.Argument(help="A built benchmark directory.")],
    repo: Annotated[str, typer.Option(help="Hub dataset repository id, e.g. my-org/atom-custom.")],
    tag: Annotated[Optional[str], typer.Option(help="Tag the upload (e.g. v1.0).")] = None,
    private: Annotated[bool, typer.Option(metavar="", help="Create the repository as private.")] = False,
    token: Annotated[Optional[str], typer.Option(help="Hub token with write access (default: $HF_TOKEN).")] = None,
) -> None:
    """Upload a built benchmark with its dataset card to the Hugging Face Hub."""
    from atom_bench.data import hub

    commit = hub.publish(path, repo, token=token, revision_tag=tag, private=private)
    _say("published", f"{path} to {repo} at commit {commit}" + (f" (tag {tag})" if tag else ""))


@app.command(cls=_ListsRegisteredModels)
def evaluate(
    model: Annotated[str, typer.Option("--model", help="Registered model (atom-bench models), module path, .py file or module:factory.")] = "regismcan",
    track: Annotated[str, typer.Option(help="Track to evaluate on.")] = "hard",
    split: Annotated[str, typer.Option(help="Split to evaluate on.")] = "test_unseen",
    weights: Annotated[Optional[Path], typer.Option(help="safetensors weights (default: the shipped ones for the track).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Slices per forward pass.")] = 32,
    out: Annotated[Optional[Path], typer.Option(help="Prediction file to write (.parquet or .csv) [default: runs/<benchmark>-<manifest>/<model>-<track>-<split>.parquet].")] = None,
    diagnostic: Annotated[bool, typer.Option(metavar="", help="Also score with swapped and blank volumes.")] = True,
    submit: Annotated[bool, typer.Option("--submit", metavar="", help="Add the result to submissions/ and regenerate the leaderboards.")] = False,
    name: Annotated[Optional[str], typer.Option(help="Submission name (default: <model>-<split>).")] = None,
    force: Annotated[bool, typer.Option("--force", metavar="", help="Replace an existing submission of the same name.")] = False,
    meta: Annotated[Optional[Path], typer.Option("--meta", help="With --submit: META.yaml with authors and code_url (as for submit).")] = None,
    device: Annotated[str, typer.Option(help="Where the model runs: cpu, cuda or cuda:N (under torchrun, cuda is cuda:LOCAL_RANK).")] = "cpu",
    cache: Annotated[bool, typer.Option(metavar="", help="Keep finished batches in runs/.cache/ so that an interrupted run resumes.")] = True,
    root: RootOpt = None,
) -> None:
    """Run a model over a split, write its predictions, score them and test its use of the volume.

    Under torchrun (`torchrun --nproc_per_node N -m atom_bench.cli evaluate ...`) every process
    predicts a share of the split's volumes; the first writes, scores and submits."""
    from rich.markup import escape

    from atom_bench.data.benchmark import Benchmark
    from atom_bench.eval.scoring import render_scores
    from atom_bench.models.run import evaluate_model

    if submit and meta is None:  # before the run: a submission names who made the model
        raise AtomBenchError("--submit needs --meta META.yaml with the model's authors and code_url (fields as for `atom-bench submit`)")
    from atom_bench.models.sharding import resolve_device, shard_indices, world

    resolve_device(device)  # an unavailable device fails before the progress bar starts
    rank, size = world()
    volume_ids = Benchmark.open(root).read_columns(track, split, ("volume_id",)).column("volume_id").to_pylist()  # not the slices
    total = len(shard_indices(volume_ids, rank, size)) * (3 if diagnostic else 1)
    with _progress() as progress:
        task = progress.add_task(escape(f"{model} on {track}/{split}"), total=total, visible=rank == 0)  # the bar's text column reads markup
        scores, path = evaluate_model(
            model, track, split, weights=weights, batch_size=batch_size, out=out, root=root, diagnostic=diagnostic,
            on_batch=lambda n: progress.update(task, advance=n), device=device, cache=cache,
        )  # fmt: skip
    if path is None:  # not the first process of a torchrun job: rank 0 reports
        return
    console.print(render_scores(scores))
    for mode, entry in scores.get("volume_reliance", {}).items():
        drop = entry.get("drop_high")
        console.print(
            f"volume {mode}: {100 * entry['changed_high']:.1f}% of coarse answers change"
            + (f", top-1 coarse drops {100 * drop['value']:.1f} points [{100 * drop['ci'][0]:.1f}, {100 * drop['ci'][1]:.1f}]" if drop else "")
        )
    _say("wrote", f"{path}")
    if submit:
        from atom_bench.board.leaderboard import regenerate
        from atom_bench.models.run import submit_evaluation

        target = submit_evaluation(scores, path, name or f"{scores['model']['name']}-{split}", root=root, force=force, meta=meta)
        regenerate()
        _say("submitted", f"{target}; leaderboards regenerated")


@app.command(cls=_Command)
def show(
    sample_id: Annotated[str, typer.Argument(help="A sample id, e.g. easy-train-colin27_t1-00000.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    root: RootOpt = None,
) -> None:
    """Draw a sample's slice next to three orthogonal cuts of its volume, plane drawn in."""
    from atom_bench.viz import render_sample

    _say("wrote", f"{render_sample(sample_id, out, root)}")


@app.command(cls=_Command)
def train(
    model: Annotated[str, typer.Option("--model", help="Trainable or count-built model (atom-bench models), module path, .py file or module:factory.")],
    track: Annotated[str, typer.Option("--track", help="Track to train on.")],
    epochs: Annotated[int, typer.Option(help="Epochs (validation and checkpoint after each).")] = 20,
    steps_per_epoch: Annotated[int, typer.Option(help="Optimisation steps per epoch.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Slices per step (per process).")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of weights, stream and order.")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default runs/<model>-<track>); reruns resume.")] = None,
    source: Annotated[str, typer.Option(help="stream (fresh on-the-fly samples), split (the fixed train split) or synthetic (new synthetic subjects from the training volumes).")] = "stream",
    loss: Annotated[str, typer.Option(help="asl or ce.")] = "asl",
    augment: Annotated[bool, typer.Option(metavar="", help="Stream and synthetic: each batch group's volume under a random cube symmetry (48).")] = True,
    volumes_per_batch: Annotated[int, typer.Option(help="Stream and synthetic: distinct training volumes (subjects) per batch.")] = 4,
    max_minutes: Annotated[Optional[float], typer.Option(help="Wall-time budget; the run stops, scored and saved, when it runs out.")] = None,
    slice_contrast: Annotated[str, typer.Option(help="Synthetic source on histology: independent (a second contrast of the subject) or same (the volume itself; only the track's remap differs).")] = "independent",
    severity_ramp: Annotated[int, typer.Option(help="Synthetic source on histology: batches over which the track's degradations grow from none to full strength (0: full from the start).")] = 0,
    severity_mix: Annotated[bool, typer.Option(metavar="", help="Synthetic source on histology: each subject's slices at a severity drawn from U(0, 1), so batches mix near-clean and degraded cuts.")] = False,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Warm start: a .safetensors file of the same model to start from (recorded in the weights).")] = None,
    root: RootOpt = None,
) -> None:
    """Train a model on a track's training volumes; keep the best checkpoint on validation."""
    import os

    from rich.markup import escape

    from atom_bench.models.synthetic import SynthSettings
    from atom_bench.models.train import check_settings
    from atom_bench.models.train import train as run_train

    check_settings(model, source, loss, volumes_per_batch, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                   lr=lr, max_minutes=max_minutes)  # fail before the progress bar starts
    synthetic = SynthSettings(slice_contrast=slice_contrast, severity_ramp=severity_ramp, severity_mix=severity_mix)
    out = out or Path("runs") / f"{model.replace(':', '-').replace('/', '-')}-{track}"
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with _progress() as progress:
        task = progress.add_task(escape(f"{model} on {track}"), total=epochs * steps_per_epoch, visible=rank0)
        summary = run_train(
            model, track, out=out, root=root, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
            lr=lr, seed=seed, source=source, max_minutes=max_minutes, loss=loss, augment=augment,
            volumes_per_batch=volumes_per_batch, init_from=init_from, synthetic=synthetic,
            on_step=lambda step, total: progress.update(task, completed=step),
        )  # fmt: skip
    if rank0:
        console.print(Text(
            f"best epoch {summary['epoch']} (step {summary['step']}): validation top-1 high "
            f"{summary['val_top1_high']:.4f}, low {summary['val_top1_low']:.4f}; wrote {summary['best']}"
        ), highlight=False)  # fmt: skip


@app.command(cls=_Command)
def models() -> None:
    """List the registered models: what each can do and its shipped weights per track."""
    from atom_bench.models.listing import models_table

    console.print(models_table())


@app.command(cls=_Command)
def version() -> None:
    """Print the toolkit version."""
    console.print(__version__)


PredArg = Annotated[Path, typer.Argument(help="Prediction file (.parquet or .csv; schema in PROTOCOL section 6).")]
TrackOpt = Annotated[Optional[str], typer.Option("--track", help="Track the file is for (needed when the file records none, e.g. a plain CSV).")]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help="Split the file is for (with --track).")]
LabelsOpt = Annotated[Optional[Path], typer.Option("--labels", help="Labels file kept apart from the public data (hidden test labels).")]


@app.command(cls=_Command)
def validate(
    predictions: PredArg,
    track: Annotated[str, typer.Option("--track", help="Track the file must be for.")],
    split: Annotated[str, typer.Option("--split", help="Split the file must cover.")],
    root: RootOpt = None,
) -> None:
    """Check a prediction file against a split (ids, types, ranges, top-5 lists, dataset)."""
    from atom_bench.eval.predictions import validate_predictions

    frame = validate_predictions(predictions, track, split, root)
    _say("valid", f"{predictions}: {len(frame)} predictions for {track}/{split}")


@app.command(cls=_Command)
def score(
    predictions: PredArg,
    labels: LabelsOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Scores JSON (default: <predictions>.scores.json).")] = None,
    track: TrackOpt = None,
    split: SplitOpt = None,
    root: RootOpt = None,
) -> None:
    """Validate and score a prediction file; print the metrics with floors and write JSON."""
    from atom_bench._io import write_json_atomic
    from atom_bench.eval.scoring import render_scores, score_file

    result = score_file(predictions, root=root, labels=labels, track=track, split=split)
    target = out or predictions.with_name(predictions.name.rsplit(".", 1)[0] + ".scores.json")
    write_json_atomic(target, result)
    console.print(render_scores(result))
    console.print(Text(f"scored against dataset revision {result['dataset_revision']} (manifest sha256 {result['manifest_sha256']})"))
    _say("wrote", f"{target}")


@app.command(cls=_Command)
def submit(
    predictions: PredArg,
    name: Annotated[str, typer.Option("--name", help="Entry name, unique within the track.")],
    meta: Annotated[Path, typer.Option("--meta", help="META.yaml: model_name, authors, code_url, n_parameters, training_data, seeds, hardware.")],
    labels: LabelsOpt = None,
    submissions: Annotated[Path, typer.Option("--submissions", help="Submissions directory.")] = Path("submissions"),
    force: Annotated[bool, typer.Option("--force", metavar="", help="Replace an existing entry of the same name.")] = False,
    track: TrackOpt = None,
    split: SplitOpt = None,
    root: RootOpt = None,
) -> None:
    """Validate, score and store a submission under submissions/<track>/<name>/."""
    from atom_bench.board.submissions import submit as do_submit

    target = do_submit(predictions, name=name, meta=meta, root=root, labels=labels, submissions_dir=submissions, force=force,
                       track=track, split=split)  # fmt: skip
    _say("submitted", f"{target}; run `atom-bench leaderboard` to update the tables")


@app.command(cls=_Command)
def compare(
    a: Annotated[str, typer.Argument(help="Prediction file, or a submission name (<name> or <track>/<name>).")],
    b: Annotated[str, typer.Argument(help="The other prediction file or submission of the same split.")],
    labels: LabelsOpt = None,
    submissions: Annotated[Path, typer.Option("--submissions", help="Where submission names are looked up.")] = Path("submissions"),
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the comparison JSON here.")] = None,
    root: RootOpt = None,
) -> None:
    """Is A better than B? Paired differences of every metric with slice- and volume-level intervals."""
    from atom_bench._io import write_json_atomic
    from atom_bench.board.submissions import predictions_of
    from atom_bench.eval.compare import compare_files, render_comparison

    result = compare_files(predictions_of(a, submissions), predictions_of(b, submissions), root=root, labels=labels)
    console.print(render_comparison(result))
    if out is not None:
        write_json_atomic(out, result)
        _say("wrote", str(out))


@app.command(cls=_Command)
def leaderboard(
    submissions: Annotated[Path, typer.Option("--submissions", help="Submissions directory.")] = Path("submissions"),
    out: Annotated[Path, typer.Option("--out", help="Leaderboards directory.")] = Path("leaderboards"),
    check: Annotated[bool, typer.Option("--check", metavar="", help="Only check that the files match the submissions (CI).")] = False,
) -> None:
    """Regenerate leaderboards/<track>.md, <track>.csv, <track>.png and index.html from the submissions."""
    from atom_bench.board import leaderboard as lb

    if check:
        bad = lb.stale(submissions, out)
        if bad:
            raise AtomBenchError(f"leaderboards out of date: {', '.join(bad)}; run `atom-bench leaderboard` and commit {out}")
        _say("up to date", f"{out}")
        return
    changed = lb.regenerate(submissions, out)
    if changed:
        _say("updated", ", ".join(changed))
    else:
        console.print(Text(f"{out} already up to date"))


def _in_flag_terms(error: AtomBenchError) -> str:
    """The library's message with the parameters it names written as this command line's flags.

    The library says ``size``, ``frame=N`` or ``force=True``; a command-line user typed
    ``--size``, ``--frame N`` and ``--force``.
    """
    text = str(error)
    for name in error.parameters:
        flag, word = "--" + name.replace("_", "-"), re.escape(name)
        text = re.sub(rf"(?<![\w-]){word}=True\b", flag, text)
        text = re.sub(rf"(?<![\w-]){word}=False\b", "--no-" + name.replace("_", "-"), text)
        text = re.sub(rf"(?<![\w-]){word}=", flag + " ", text)
        text = re.sub(rf"(?<![\w-]){word}\b", flag, text)
    return text


def _print_error(message: str) -> None:
    # User data (ids, paths, file contents) may hold rich markup: print it as plain text.
    err_console.print(Text.assemble(("error: ", "red"), message), highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        result = app(args=argv, prog_name="atom-bench", standalone_mode=False)
    except AtomBenchError as error:
        _print_error(_in_flag_terms(error))
        return error.exit_code
    except _EXITS as done:
        return done.exit_code
    except _PARSER.NoArgsIsHelpError as error:
        error.show()  # the bare command: its help is the answer
        return 2
    except _PARSER.UsageError as error:
        command = error.ctx.command_path if error.ctx is not None else "atom-bench"
        _print_error(f"{error.format_message()} (see '{command} --help')")
        return 2
    except _PARSER.ClickException as error:
        _print_error(error.format_message())
        return error.exit_code
    except _ABORTS:
        err_console.print("aborted")
        return 130
    except OSError as error:
        _print_error(f"{error.strerror or error}: {error.filename or ''}")
        return 2
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point: :func:`main`, then exit without native-library finalisers.

    Some native libraries loaded by the stack (Arrow, torch) occasionally abort at interpreter
    shutdown ("terminate called without an active exception"), which would turn a clean exit code
    into 134. Every file we write is complete (atomic rename) before ``main`` returns, so after
    flushing the streams the process can end at once with ``main``'s code.
    """
    import os

    code = main()
    gc.collect()  # run the finalizers os._exit would skip (a worker pool's semaphores, open files)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()

"""The dataset card (``README.md`` with YAML ``configs``) of a built benchmark.

The YAML front matter maps every track to its parquet shards, so that the Hugging Face Hub
viewer and ``datasets.load_dataset(path_or_repo, track, split=...)`` find the splits without a
loading script; ``volumes_<table>`` configs hold the cubes, one config per cube size.
"""

from __future__ import annotations

import yaml

from atom_bench.core.volumes import QUANT_LEVELS
from atom_bench.data.schema import volume_features


def volumes_config(manifest: dict, track: str) -> str:
    """The ``volumes_*`` config whose cubes the sample rows of ``track`` join on ``volume_id``."""
    return f"volumes_{manifest['tracks'][track]['volume_table']}"


def _configs(manifest: dict) -> list[dict]:
    configs = []
    for track, info in manifest["tracks"].items():
        data_files = [
            {"split": split, "path": f"{track}/{split}-*.parquet"}
            for split, split_info in info["splits"].items()
            if split_info["files"]
        ]
        configs.append({"config_name": track, "data_files": data_files})
    for name in manifest["volume_tables"]:  # one config per cube size: a config has one schema
        configs.append({"config_name": f"volumes_{name}", "data_files": [{"split": "volumes", "path": f"volumes/{name}-*.parquet"}]})
    return configs


def dataset_card(manifest: dict) -> str:
    """Render the dataset card for a manifest (without its ``files`` checksums)."""
    licences = sorted({v["licence"] for v in manifest["volumes"] if v["licence"]})
    front = {
        "pretty_name": f"ATOM-Bench: {manifest['name']}",
        "license": "other",
        "task_categories": ["image-classification"],
        "tags": ["medical-imaging", "slice-to-volume", "registration", "nifti", "atom-bench"],
        "configs": _configs(manifest),
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# ATOM-Bench: {manifest['name']} (version {manifest['version']})",
        "",
        "Locate a 2D slice inside the 3D volume it was cut from. Each sample holds the slice, the id of",
        "its volume (stored once, in the `volumes_*` configs), the pose it was cut at and its block labels:",
        "`high_label` (one of 27 coarse blocks) and `low_label` (one of 729 fine blocks). The protocol,",
        "with the exact geometry and metrics, is `docs/PROTOCOL.md` of the atom-bench toolkit.",
        "",
        f"Built by atom-bench {manifest['toolkit_version']} (protocol {manifest['protocol']}), seed {manifest['build']['seed']}."
        + (" Test labels are withheld." if manifest["labels_withheld"] else ""),
        "",
        "## Tracks and splits",
        "",
        "| track | cube | slice | poses | volumes config | train | validation | test_seen | test_unseen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for track, info in manifest["tracks"].items():
        counts = " | ".join(str(info["splits"][s]["num_samples"]) for s in ("train", "validation", "test_seen", "test_unseen"))
        h, w = info["slice_shape"]
        lines.append(f"| {track} | {info['size']}^3 | {h}x{w} | {info['poses']} | `{volumes_config(manifest, track)}` | {counts} |")
    lines += _volume_config_lines(manifest)
    lines += [
        "",
        "## Volumes",
        "",
        "| volume_id | subject | modality | group | source | licence |",
        "|---|---|---|---|---|---|",
    ]
    for v in manifest["volumes"]:
        lines.append(f"| {v['volume_id']} | {v['subject']} | {v['modality']} | {v['group']} | {v['source']} | {v['licence']} |")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import atom_bench",
        'train = atom_bench.load_split("easy", "train", root="path/to/this/folder")',
        "```",
        "",
        "or `datasets.load_dataset(<this repo or folder>, \"easy\", split=\"train\")`.",
        "`manifest.json` lists the sha256 of every file; `atom-bench download` verifies them.",
        "",
        "Licences: " + ("; ".join(licences) if licences else "see the volumes table") + ".",
        "",
    ]
    return "\n".join(lines)


def _volume_config_lines(manifest: dict) -> list[str]:
    """Which volumes config each track joins, and what a ``voxels`` value is (dtype, range, scale)."""
    users: dict[str, list[str]] = {}
    for track in manifest["tracks"]:
        users.setdefault(volumes_config(manifest, track), []).append(track)
    lines = ["", "## Volumes configs", "", "| config | cube | joined by the rows of |", "|---|---|---|"]
    for name in manifest["volume_tables"]:
        config = f"volumes_{name}"
        size = next(manifest["tracks"][t]["size"] for t in users[config]) if config in users else "?"
        lines.append(f"| `{config}` | {size}^3 | {', '.join(users.get(config, [])) or '-'} |")
    size = next(iter(manifest["tracks"].values()))["size"]
    features = volume_features(size)
    voxels, mask = features["voxels"].dtype, features["mask"].dtype
    lines += [
        "",
        "A sample row names its cube by `volume_id`; join it with the row of the same `volume_id` in its",
        "track's volumes config. One row per volume: `voxels` (S, S, S) in RAS axis order, stored as",
        f"`{voxels}` with values 0..{QUANT_LEVELS}: the normalised intensity in [0, 1] times {QUANT_LEVELS},",
        f"rounded; `mask` (`{mask}`, 0 or 1) is the foreground; `affine` (16 float64, row-major) maps",
        "cube voxels to scanner millimetres.",
        "",
        'With `set_format("numpy")` both `voxels` and `mask` come back as `int64` arrays: the `datasets`',
        "numpy formatter casts every integer array to int64 unless it is given a dtype. For the float32",
        "intensities in [0, 1] (exactly what `atom_bench.load_volume` returns), divide:",
        f'`row["voxels"].astype(numpy.float32) / {QUANT_LEVELS}`. `set_format("numpy", dtype="float32")` gives',
        f"floats that are not rescaled (0..{QUANT_LEVELS}) and casts every column, the affine included, to float32.",
    ]
    return lines

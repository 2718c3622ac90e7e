"""The dataset card (``README.md`` with YAML ``configs``) of a built benchmark.

The YAML front matter maps every track to its parquet shards, so that the Hugging Face Hub
viewer and ``datasets.load_dataset(path_or_repo, track, split=...)`` find the splits without a
loading script; ``volumes_<table>`` configs hold the cubes, one config per cube size.
"""

from __future__ import annotations

import yaml


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
        "| track | cube | slice | poses | train | validation | test_seen | test_unseen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for track, info in manifest["tracks"].items():
        counts = " | ".join(str(info["splits"][s]["num_samples"]) for s in ("train", "validation", "test_seen", "test_unseen"))
        h, w = info["slice_shape"]
        lines.append(f"| {track} | {info['size']}^3 | {h}x{w} | {info['poses']} | {counts} |")
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

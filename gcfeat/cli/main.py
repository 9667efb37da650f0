"""`gcfeat <command> ...`: one entry point for every command (`gcfeat train --help`)."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "synth": ("gcfeat.cli.synthetic", "write a synthetic surgical dataset in a real layout"),
    "mri-synth": ("gcfeat.cli.mri_synthetic", "write a synthetic MRI / CT dataset (--task)"),
    "train": ("gcfeat.cli.train", "train a task's classifier (--task, default surgical)"),
    "bbox": ("gcfeat.cli.bbox", "one frame, one class: heatmap + boxes figure"),
    "tune": ("gcfeat.cli.tune", "box quality against ground truth as the threshold T varies"),
    "extract": ("gcfeat.cli.extract", "bulk object-level feature dump to HDF5"),
    "export": ("gcfeat.cli.export", "export features for captioning / interaction models"),
    "evaluate": ("gcfeat.cli.evaluate", "MRI tasks: metrics, localisation, deletion / insertion AUC"),
    "report": ("gcfeat.cli.report", "HTML report of a run directory or a feature file"),
    "demo": ("gcfeat.cli.demo", "the main job on synthetic data"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: gcfeat <command> [options]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<9} {help_}")
        print("\n`gcfeat <command> --help` explains each one.")
        if argv and argv[0] not in ("-h", "--help"):
            print(
                f"error: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr
            )
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())

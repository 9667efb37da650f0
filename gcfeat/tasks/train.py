"""`python -m gcfeat.tasks.train`: the CLI is :mod:`gcfeat.cli.task_train`."""

from gcfeat.cli.task_train import main

if __name__ == "__main__":
    raise SystemExit(main())

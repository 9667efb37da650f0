"""`python -m gcfeat.train`: the CLI is :mod:`gcfeat.cli.train`."""

from gcfeat.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())

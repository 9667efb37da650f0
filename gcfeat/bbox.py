"""`python -m gcfeat.bbox`: the CLI is :mod:`gcfeat.cli.bbox`."""

from gcfeat.cli.bbox import main

if __name__ == "__main__":
    raise SystemExit(main())

"""The frozen app's entry point: the same `main` as the `localr1` console script."""

from localr1.cli.main import main

if __name__ == "__main__":
    main()

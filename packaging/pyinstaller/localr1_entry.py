"""The frozen app's entry point: the same `main` as the `localr1` console script."""

import multiprocessing

if __name__ == "__main__":
    # `localr1 eval` checks answers in a spawned child (localr1.evaluation.scoring): in a frozen
    # app that child is this executable again, and freeze_support runs it as the child (and
    # exits) instead of starting the CLI. First, before the CLI's imports, to start fast.
    multiprocessing.freeze_support()
    from localr1.cli.main import main

    main()

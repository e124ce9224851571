"""The commands: ``perfedavg`` (:mod:`~perfedavg.cli.main`, the thin ``@hydra.main``) and ``perfedavg-flwr-run``
(:mod:`~perfedavg.cli.flwr_run`). A user's mistake becomes one line and exit 2 here
(:func:`perfedavg.errors.exit_on_user_error`)."""

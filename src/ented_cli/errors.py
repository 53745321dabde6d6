"""User-facing errors and the exit codes the CLI documents."""

EXIT_OK = 0  # every input processed
EXIT_FAILURE = 1  # nothing could be done (bad weights, every input failed, ...)
EXIT_USAGE = 2  # wrong flags or arguments (click uses 2 as well)
EXIT_PARTIAL = 3  # some inputs failed, the rest were written
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it); finished outputs are kept


class EntedError(Exception):
    """An error a user can fix: the message is one line naming the file and the fix."""

    exit_code = EXIT_FAILURE


class InputError(EntedError):
    """One input (image or reference) cannot be used; a batch carries on without it."""


class UsageError(EntedError):
    exit_code = EXIT_USAGE


class WeightsError(EntedError):
    """Weights are missing, corrupt or do not match the manifest."""

"""Exceptions that the CLI turns into one-line messages and exit codes.

UserError (exit 2): bad input — a corrupt file, an unknown name, a malformed option.
ValidationFailed (exit 1): the inputs were fine but a check failed (graphs disagree,
atc failed, a shape falls back to TransposeD with --require-fast, ...).
"""


class LvvitOptError(Exception):
    exit_code = 1


class UserError(LvvitOptError):
    exit_code = 2


class OutputRefused(UserError):
    """fileio.guard_outputs refused an output before any work; `paths` are the outputs at
    fault, which nothing (not even an error envelope for --json) may then write."""

    def __init__(self, message: str, paths=()):
        super().__init__(message)
        self.paths = tuple(str(p) for p in paths)


class ValidationFailed(LvvitOptError):
    exit_code = 1


class ToolFailed(LvvitOptError):
    """An external program (atc, benchmark, ...) ran and failed."""

    exit_code = 1

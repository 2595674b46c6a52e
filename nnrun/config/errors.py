"""Error types that map to the command-line exit codes of DESIGN.md section 5."""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_DIVERGED = 4
EXIT_INTERRUPTED = 130


class NnrunError(Exception):
    """Base of all errors a user can fix; `exit_code` is what the CLI returns."""

    exit_code = EXIT_UNEXPECTED

    def __init__(self, message: str, *, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ConfigError(NnrunError):
    """A problem in a config, a `--set` override or a CLI argument (exit 2).

    `problems` holds every (where, message) pair found, so that one error can
    report all of them at once.
    """

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, *, where: str | None = None,
                 problems: list[tuple[str | None, str]] | None = None):
        super().__init__(message, where=where)
        self.problems = problems or [(where, message)]

    def __str__(self) -> str:
        return "\n".join(f"{w}: {m}" if w else m for w, m in self.problems)


class DataError(NnrunError):
    """Data that cannot be read or does not fit the model (exit 3). `problems`, as a
    ConfigError's: every (where, message) found at once (data files a config names,
    checked before reading them)."""

    exit_code = EXIT_DATA

    def __init__(self, message: str, *, where: str | None = None,
                 problems: list[tuple[str | None, str]] | None = None):
        super().__init__(message, where=where)
        self.problems = problems or [(where, message)]


class CheckpointError(NnrunError):
    """A checkpoint that is missing, corrupt or does not match the model (exit 3)."""

    exit_code = EXIT_DATA


class DivergedError(NnrunError):
    """Training produced NaN or inf (exit 4)."""

    exit_code = EXIT_DIVERGED

"""Errors the CLI turns into one readable line and a documented exit code.

Exit codes (also in README.md):
    0  success
    1  internal error (a bug: the traceback is logged)
    2  usage or configuration error
    3  input error: a missing or unreadable extract, a missing required column
    4  validation failed: an output broke its contract and was not published
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_VALIDATION = 4


class CustsegError(Exception):
    """Base of the errors a user can act on; `exit_code` says which kind it is."""

    exit_code = EXIT_INTERNAL


class ConfigError(CustsegError):
    exit_code = EXIT_USAGE


class UsageError(CustsegError):
    exit_code = EXIT_USAGE


class InputError(CustsegError):
    exit_code = EXIT_INPUT


class ValidationFailed(CustsegError):
    exit_code = EXIT_VALIDATION

"""Exceptions that the CLI turns into one-line messages and exit codes.

UserError (exit 2): bad input — a corrupt file, an unknown name, a malformed option.
ValidationFailed (exit 1): the inputs were fine but a check failed (graphs disagree,
atc failed, a shape falls back to TransposeD with --require-fast, ...).
"""


def reason_of(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text, for a one-line message: cut at the end of a
    sentence (or a word) within `limit` characters, never mid-word, marked with '...'."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else type(exc).__name__
    if len(text) <= limit:
        return text
    head = text[:limit]
    for stop in (". ", "; ", ", "):
        cut = head.rfind(stop)
        if cut > limit // 3:
            return head[:cut + 1].rstrip(",;") + " ..."
    cut = head.rfind(" ")
    return (head[:cut] if cut > limit // 3 else head) + " ..."


def one_line(message: str) -> str:
    """A message as the one line an error is: its lines joined with '; ' (a tool's multi-line
    hint, a list of problems), and any other control character escaped."""
    parts = [p for p in (" ".join(line.split()) for line in str(message).splitlines()) if p]
    text = parts[0] if parts else ""
    for part in parts[1:]:  # 'run:' then commands reads as 'run: a; b'
        text += (" " if text.endswith(":") else "; ") + part
    return "".join(ch if ord(ch) >= 0x20 and ord(ch) != 0x7F else repr(ch)[1:-1] for ch in text)


def shown(path) -> str:
    """A path as messages show it: as is, or quoted with escapes when it holds a newline or
    another control character, so a hostile file name cannot break a one-line message."""
    text = printable(str(path))
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return repr(text)
    return text


def printable(text: str) -> str:
    """`text` with the bytes of a non-UTF-8 file name (surrogates in Python's str, which
    neither a terminal, a UTF-8 file nor a plot font takes) shown as \\xNN escapes."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `timeout`, `kill`) raised like Ctrl-C, so every finally-block
    (temporary files, worker pools, atc, Ray) runs; the CLI then exits 143."""


_sigterm = {"received": False}  # set by the CLI's SIGTERM handler: a library may turn Terminated
                                # into a plain KeyboardInterrupt (Ray's get does)


def note_sigterm(received: bool = True) -> None:
    _sigterm["received"] = received


def sigterm_received() -> bool:
    """True once SIGTERM reached the CLI's handler in this command."""
    return _sigterm["received"]


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

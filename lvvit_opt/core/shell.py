"""The one writer of generated shell scripts (tune's reproduce.sh, run's atc_commands.sh).

A script is built from argument lists, never from formatted text: every word that carries data
(a path, a node name, a shape) goes through `shlex.quote`, so a model named `m$(cmd).onnx`, or
one with a quote, a `;`, a space or a newline in its name, is one argument when the script runs.
Comments are made single-line (line breaks shown as `\\n`), so no data ends a comment.

Every script starts with `#!/usr/bin/env bash`, `set -euo pipefail` and a `cd` into its own
folder; paths under that folder are written relative to it, so the output folder can be copied
or moved and its script still runs; paths elsewhere are written absolute. The file is written
atomically and is executable (0o755 less the umask).

    script = ShellScript(out / "reproduce.sh")
    script.comment("lvvit-opt tune: ...")
    script.run(["lvvit-opt", "apply", script.path(model), "-o", script.path(out / "best.onnx")])
    script.write()
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Sequence

SHEBANG = "#!/usr/bin/env bash"
STRICT = "set -euo pipefail"
CD_HERE = 'cd -- "$(dirname -- "$0")"'
SCRIPT_MODE = 0o755
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote_argv(argv: Sequence[str | os.PathLike]) -> str:
    """One shell line running argv exactly (each word quoted as needed)."""
    words = [os.fspath(word) for word in argv]
    if not words:
        raise ValueError("an empty command")
    return " ".join(shlex.quote(word) for word in words)


def comment_line(text: str) -> str:
    """`# text` on one line: line breaks and other control characters are written escaped."""
    safe = "".join(ch if ch.isprintable() or ch == "\t" else repr(ch)[1:-1] for ch in str(text))
    return "# " + safe if safe else "#"


class ShellScript:
    """A bash script under construction; `write()` puts it at `path`, executable."""

    def __init__(self, path: str | os.PathLike, *, description: str | None = None) -> None:
        self.file = Path(path)
        self.folder = Path(os.path.abspath(self.file.parent))
        self.lines: list[str] = [SHEBANG, STRICT, CD_HERE + "  # paths below are relative to this script's folder"]
        if description:
            self.lines.append(comment_line(description))
        self.body_start = len(self.lines)

    # ---------------------------------------------------------------- words
    def path(self, path: str | os.PathLike) -> str:
        """`path` as the script names it: relative to the script's folder when it lies inside it
        (`./` first when it would start with `-`), absolute otherwise."""
        absolute = Path(os.path.abspath(os.fspath(path)))
        if absolute == self.folder or self.folder in absolute.parents:
            relative = os.path.relpath(absolute, self.folder)
            return "./" + relative if relative.startswith("-") else relative
        return str(absolute)

    def path_flags(self, argv: Sequence[str], flags: Sequence[str]) -> list[str]:
        """argv with the value of each `--flag=PATH` word (flags given with their `=`) named as `path()`
        names it: atc's `--model=...`, `--output=...`."""
        out = []
        for word in argv:
            flag = next((f for f in flags if word.startswith(f)), None)
            out.append(flag + self.path(word[len(flag):]) if flag else word)
        return out

    # ---------------------------------------------------------------- lines
    def comment(self, text: str) -> "ShellScript":
        self.lines.append(comment_line(text))
        return self

    def run(self, argv: Sequence[str | os.PathLike], *, comment: str | None = None) -> "ShellScript":
        """A command line running argv (each word quoted); an optional trailing comment."""
        line = quote_argv(argv)
        self.lines.append(line + ("  " + comment_line(comment) if comment else ""))
        return self

    def export(self, name: str, paths: Sequence[str | os.PathLike], *, append_existing: bool = False) -> "ShellScript":
        """`export NAME=P1:P2...` of paths (each as `path()` names it; relative ones are made absolute
        at run time from the script's folder, so a child that changes directory still finds them);
        append_existing keeps the variable's earlier value after them, when it has one."""
        if not _NAME.match(name):
            raise ValueError(f"not a shell variable name: {name!r}")
        parts = []
        for entry in paths:
            shown = self.path(entry)
            parts.append(shlex.quote(shown) if os.path.isabs(shown) else '"$PWD"/' + shlex.quote(shown))
        value = ":".join(parts)
        if append_existing:
            value += f'"${{{name}:+:${name}}}"'
        self.lines.append(f"export {name}={value}")
        return self

    def literal(self, line: str) -> "ShellScript":
        """A fixed line of shell written by the program (no data in it: callers pass constants only)."""
        if "\n" in line or "\r" in line:
            raise ValueError("a literal shell line must be one line")
        self.lines.append(line)
        return self

    # ---------------------------------------------------------------- output
    def body(self) -> list[str]:
        """The lines after the header (shebang, strict mode, cd, description): what the script does."""
        return self.lines[self.body_start:]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def write(self) -> Path:
        """Write the script atomically and make it executable (0o755 less the umask)."""
        from lvvit_opt.core.fileio import resolve_output, write_text_atomic

        write_text_atomic(self.file, self.text())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(resolve_output(self.file), SCRIPT_MODE & ~mask)
        return self.file

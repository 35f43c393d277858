"""Errors that reach the user: one exception type, caught once at the CLI edge (exit 2)."""

from __future__ import annotations


def location(file: str, line: int | None, column: int | None = None) -> str:
    """``FILE[:LINE[:COL]]``, the way compilers and editors link to a place."""
    parts = [file]
    if line is not None:
        parts.append(str(line))
        if column is not None:
            parts.append(str(column))
    return ":".join(parts)


class MicrovarError(Exception):
    """A problem with the user's input or set-up, with a message meant for a person."""


class InputError(MicrovarError):
    """Bad input at a known place: ``FILE:LINE[:COL]: message`` plus optional context lines."""

    def __init__(self, file: str, line: int | None, message: str, column: int | None = None,
                 context: str = "") -> None:
        self.file, self.line, self.column, self.message, self.context = file, line, column, message, context
        super().__init__(self.render())

    @property
    def where(self) -> str:
        return location(self.file, self.line, self.column)

    def render(self) -> str:
        text = f"{self.where}: {self.message}"
        return f"{text}\n{self.context}" if self.context else text


class InputErrors(MicrovarError):
    """Several input errors found in one pass, reported together."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        shown = errors[:20]
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__("\n".join(e.render() for e in shown) + more)

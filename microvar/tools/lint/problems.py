"""What `microvar lint` finds: a ``Problem`` at its place (``FILE:LINE[:COL]``) and the
``Report`` that holds them all, rendered as text or JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import location

SEVERITIES = ("error", "warning", "note")


@dataclass
class Problem:
    file: str
    line: int | None
    column: int | None
    severity: str
    code: str
    message: str
    suggestion: str = ""
    context: str = ""

    @property
    def where(self) -> str:
        return location(self.file, self.line, self.column)

    def render(self) -> str:
        out = [f"{self.where}: {self.severity}: {self.message} [{self.code}]"]
        if self.context:
            out.append(self.context)
        if self.suggestion:
            out.append(f"    suggestion: {self.suggestion}")
        return "\n".join(out)

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column, "severity": self.severity,
                "code": self.code, "message": self.message, "suggestion": self.suggestion or None,
                "context": self.context or None}


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)

    def count(self, severity: str) -> int:
        return sum(p.severity == severity for p in self.problems)

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def warnings(self) -> int:
        return self.count("warning")

    @property
    def notes(self) -> int:
        return self.count("note")

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def sorted(self, notes: bool = True) -> list[Problem]:
        shown = [p for p in self.problems if notes or p.severity != "note"]
        return sorted(shown, key=lambda p: (p.file, p.line or 0, p.column or 0))

    def totals(self) -> str:
        def n(k: int, word: str) -> str:
            return f"{k} {word}{'' if k == 1 else 's'}"
        if not self.problems:
            return "no problems found"
        return f"{n(self.errors, 'error')}, {n(self.warnings, 'warning')}, {n(self.notes, 'note')}"

    def lines(self, notes: bool = True) -> list[str]:
        return [p.render() for p in self.sorted(notes)] + [self.totals()]

    def to_json(self, notes: bool = True) -> dict:
        return {"problems": [p.to_json() for p in self.sorted(notes)], "errors": self.errors,
                "warnings": self.warnings, "notes": self.notes}

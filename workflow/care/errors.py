"""Errors about bad input: each names the file, the record (line or row) and the field."""

from __future__ import annotations


class CareInputError(Exception):
    """Bad input data or configuration, reported to the user without a traceback."""

    def __init__(
        self,
        path: object,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        where: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.where = where
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        loc = self.path
        if self.where:
            loc += f" ({self.where})"
        if self.line is not None:
            loc += f":{self.line}"
        field = f" field '{self.field}':" if self.field else ""
        return f"{loc}:{field} {self.message}"

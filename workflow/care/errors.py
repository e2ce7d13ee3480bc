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


class CareInputErrors(CareInputError):
    """Several input errors found in one pass (``care data validate``): one line each."""

    def __init__(self, errors: list[CareInputError], more: bool = False) -> None:
        self.errors = list(errors)
        self.more = more
        first = self.errors[0]
        super().__init__(first.path, first.message, line=first.line, field=first.field,
                         where=first.where)

    def __str__(self) -> str:
        lines = [CareInputError.__str__(e) for e in self.errors]
        if self.more:
            lines.append(f"{self.path}: stopped after {len(self.errors)} errors (--max-errors)")
        return "\n".join(lines)


#: The most characters of a message taken from a parser or schema library, which may quote
#: the offending value whole (a 1 MB turn, an expanded alias bomb).
BRIEF_CHARS = 200


def brief(text: str, limit: int = BRIEF_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters: an error names, never dumps, a value."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shallowest(errors):
    """The schema error (jsonschema) to report first: the shallowest, so a missing section is
    named before its keys, ties broken by message (errors come in no fixed order)."""
    return min(errors, key=lambda e: (len(e.absolute_path), str(e.message)))


def schema_message(err) -> str:
    """A jsonschema error's message with the value it quotes shortened (``[1, 1, … is not of
    type 'string'``): the message says what is wrong, the field says where."""
    message = str(err.message)
    quoted = repr(err.instance)
    if len(quoted) > 60 and quoted in message:
        message = message.replace(quoted, brief(quoted, 60))
    return brief(message)

"""Request bodies: strict (no "5" or true for an integer), rules written into the schema (a pattern
for "not blank", the settings' length limit stamped into /openapi.json), and the shape of every
422 body."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# "Blank" is what Python's str.strip() removes (str.isspace), spelled out as one character class
# so the schema's pattern and the server's check agree on every character (e.g. U+001F is blank).
BLANK_CHARS = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
NOT_BLANK = "[^" + "".join(f"\\u{ord(c):04x}" for c in BLANK_CHARS) + "]"
QUESTION_LIMIT = "server.max_question_chars"  # where the stamp in schema.py finds the length limit


class RequestBody(BaseModel):
    """Every JSON request body: strict types, so `"k": "5"`, `"k": true` or `"full": 0` get 422
    as the schema says, instead of being coerced."""

    model_config = ConfigDict(strict=True)


def json_integer(value: Any) -> Any:
    """JSON Schema counts 5.0 as an integer, so the server does too; "5" and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integer(ge: int, le: int) -> Any:
    """An integer field of a strict request body, its bounds on the type (so that `| None` keeps
    them in the schema as minimum/maximum)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(json_integer)]


def question_field(description: str):
    """A question or search query: not blank, and at most server.max_question_chars (both in the schema)."""
    return Field(..., min_length=1, pattern=NOT_BLANK, description=description,
                 json_schema_extra={"x-limit": QUESTION_LIMIT})


def invalid_field(loc: tuple, msg: str) -> RequestValidationError:
    """A 422 for a check the schema can't express (a limit from the settings)."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


def check_question(settings, question: str, field: str = "question") -> str:
    """A question (or search query) within server.max_question_chars and not blank: a 422 like any other."""
    limit = settings.server.max_question_chars
    if not question.strip(BLANK_CHARS):
        raise invalid_field(("body", field), "must not be blank")
    if len(question) > limit:
        raise invalid_field(("body", field), f"longer than {limit} characters (server.max_question_chars)")
    return question.strip(BLANK_CHARS)


def validation_body(errors: Sequence[dict]) -> dict:
    """{"error": one line, "detail": [{loc, msg, type}]} (schema.ValidationErrorBody)."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    errors = [{**e, "msg": "must not be blank"} if e.get("type") == "string_pattern_mismatch"
              and e.get("ctx", {}).get("pattern") == NOT_BLANK else e for e in errors]
    first = errors[0] if errors else {}
    msg = first.get("msg", "invalid request")
    detail = [{"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
               "msg": str(e.get("msg", "")), "type": str(e.get("type", "value_error"))} for e in errors]
    return {"error": f"{where}: {msg}" if where else msg, "detail": detail}

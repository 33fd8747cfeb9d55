"""Request checks the schema can't express (limits that come from the settings), and the shape of
every 422 body."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.exceptions import RequestValidationError


def invalid_field(loc: tuple, msg: str) -> RequestValidationError:
    """A 422 for a check the schema can't express (a limit from the settings)."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


def check_question(settings, question: str, field: str = "question") -> str:
    """A question (or search query) within server.max_question_chars and not blank: a 422 like any other."""
    limit = settings.server.max_question_chars
    if not question.strip():
        raise invalid_field(("body", field), "must not be blank")
    if len(question) > limit:
        raise invalid_field(("body", field), f"longer than {limit} characters (server.max_question_chars)")
    return question.strip()


def validation_body(errors: Sequence[dict]) -> dict:
    """{"error": one line, "detail": [{loc, msg, type}]} (schema.ValidationErrorBody)."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = first.get("msg", "invalid request")
    detail = [{"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
               "msg": str(e.get("msg", "")), "type": str(e.get("type", "value_error"))} for e in errors]
    return {"error": f"{where}: {msg}" if where else msg, "detail": detail}

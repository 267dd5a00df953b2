"""One chat request to an OpenAI-compatible server, with our own retry and clear failures.

Every failure becomes a `RefineFailure` whose message is one line naming the server URL and the
model; the key is never part of it (server messages are redacted before being quoted).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import openai

from opensora.refine.settings import RefineSettings, display_url, redact

log = logging.getLogger(__name__)

REQUEST_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
_URL = re.compile(r"https?://[^\s\"'<>]+")


class RedactRequestUrls(logging.Filter):
    """httpx logs every request at INFO with its full URL ("HTTP Request: POST
    http://user:pass@host/v1/chat/completions?key=..."): keep the line, drop userinfo and query."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = _URL.sub(lambda m: display_url(m.group(0)), message), None
        return True


def _install_request_log_filter() -> None:
    # openai 3.x sends through httpx2 (its own logger names); older ones through httpx.
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactRequestUrls) for f in logger.filters):
            logger.addFilter(RedactRequestUrls())


_install_request_log_filter()

# Official request parameters (text_conditioning_spec.md §3): near-greedy answers.
TEMPERATURE = 0.01
TOP_P = 0.7


class RefineFailure(Exception):
    """The server could not give a usable answer. `endpoint_down` is True when a second request
    to the same endpoint would fail the same way (no key, auth, unreachable, unknown model...),
    so callers can skip it instead of waiting for another timeout."""

    def __init__(self, message: str, endpoint_down: bool = False) -> None:
        super().__init__(message)
        self.endpoint_down = endpoint_down


def _where(settings: RefineSettings) -> str:
    return f"{settings.display_url()} (model '{settings.model}')"


def _server_message(err: openai.APIStatusError, settings: RefineSettings) -> str:
    body = err.body
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message or "")
    for secret in settings.url_secrets():  # a server may echo the URL it was asked for
        text = text.replace(secret, "***")
    return redact(text, settings.api_key)


def _served_models(client: openai.OpenAI) -> list[str]:
    """Best effort: the model names the server offers, to suggest one in the error."""
    try:
        return sorted(model.id for model in client.models.list())[:8]
    except Exception:  # noqa: BLE001 - only a hint; any failure means "no hint"
        return []


def _is_unknown_model(err: openai.APIStatusError) -> bool:
    if err.code == "model_not_found":
        return True
    text = str(err.body).lower() if err.body else ""
    return "model" in text and ("not found" in text or "not exist" in text or "unknown" in text)


def _describe(err: Exception, settings: RefineSettings, client: openai.OpenAI) -> RefineFailure:
    where = _where(settings)
    if isinstance(err, openai.APITimeoutError):
        return RefineFailure(
            f"no answer from {where} within {settings.timeout_s:g} s (raise --refine-timeout "
            "for slow local servers)",
            endpoint_down=True,
        )
    if isinstance(err, openai.APIConnectionError):
        return RefineFailure(
            f"cannot reach the refinement server at {where}: connection failed", endpoint_down=True
        )
    if isinstance(err, openai.AuthenticationError):
        return RefineFailure(
            f"{where} rejected the API key (401 unauthorized); check OPENAI_API_KEY",
            endpoint_down=True,
        )
    if isinstance(err, openai.PermissionDeniedError):
        return RefineFailure(
            f"{where} refused access (403): {_server_message(err, settings)}", endpoint_down=True
        )
    if isinstance(err, openai.RateLimitError):
        return RefineFailure(
            f"{where} is rate limiting requests (429) after {settings.retries + 1} attempts; "
            "try again later",
            endpoint_down=True,
        )
    if isinstance(err, openai.NotFoundError) and _is_unknown_model(err):
        served = _served_models(client)
        hint = f"; it serves: {', '.join(served)}" if served else ""
        return RefineFailure(
            f"the server at {settings.display_url()} does not know the model "
            f"'{settings.model}' (404){hint}; choose one with --refine-model",
            endpoint_down=True,
        )
    if isinstance(err, openai.NotFoundError):
        return RefineFailure(
            f"{settings.display_url()}/chat/completions was not found (404); the base URL of an "
            "OpenAI-compatible server usually ends in /v1",
            endpoint_down=True,
        )
    if isinstance(err, openai.BadRequestError):
        return RefineFailure(
            f"{where} refused the request (400): {_server_message(err, settings)}"
        )
    if isinstance(err, openai.APIStatusError):
        return RefineFailure(
            f"{where} answered with an error ({err.status_code}): {_server_message(err, settings)}"
        )
    # Anything else is an answer we could not read: not JSON, missing fields, a client error.
    return RefineFailure(f"{where} sent a malformed answer ({type(err).__name__})")


def _answer_text(response: Any, settings: RefineSettings) -> str:
    choices = getattr(response, "choices", None)
    if not choices:
        raise RefineFailure(f"{_where(settings)} sent a malformed answer (no choices)")
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if not isinstance(content, str) or not content.strip():
        raise RefineFailure(f"{_where(settings)} sent a malformed answer (empty message)")
    return content


def chat(settings: RefineSettings, messages: list[dict[str, Any]], max_tokens: int) -> str:
    """Send one chat completion and return the assistant text, or raise RefineFailure.

    Retries once, after `settings.backoff_s`, on 429, timeouts and connection errors only;
    the openai client's own retries are off so the count here is the real one.
    """
    key = settings.key_for_request()
    if key is None:
        raise RefineFailure(
            f"no API key for {settings.display_url()}: set OPENAI_API_KEY, or point "
            "--refine-base-url / OPENAI_BASE_URL at a local server",
            endpoint_down=True,
        )
    userinfo = settings.url_userinfo()
    # Credentials of the base URL travel as basic auth and query parameters, not inside the URL
    # the client joins paths onto (and logs).
    http_client = openai.DefaultHttpxClient(auth=userinfo) if userinfo else None
    with openai.OpenAI(
        api_key=key, base_url=settings.request_url(), default_query=settings.url_query() or None,
        timeout=settings.timeout_s, max_retries=0, http_client=http_client,
    ) as client:
        for attempt in range(settings.retries + 1):
            try:
                response = client.chat.completions.create(
                    model=settings.model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=TEMPERATURE,
                    top_p=TOP_P,
                    max_tokens=max_tokens,
                    stream=False,
                )
                return _answer_text(response, settings)
            except (openai.RateLimitError, openai.APIConnectionError) as err:
                if attempt < settings.retries:
                    delay = settings.backoff_s * (2**attempt)
                    log.info("refinement request failed (%s); retrying in %.1f s",
                             type(err).__name__, delay)
                    time.sleep(delay)
                    continue
                raise _describe(err, settings, client) from None
            except RefineFailure:
                raise
            except Exception as err:  # noqa: BLE001 - every failure must become a notice
                raise _describe(err, settings, client) from None
    raise AssertionError("unreachable")

"""Where prompt refinement is sent: endpoint, key, model, timeouts (from env + CLI flags)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from opensora.errors import UserError

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o"  # what the official Open-Sora 2.0 code asks
DEFAULT_TIMEOUT_S = 30.0
# Local servers (vLLM, Ollama, LM Studio, llama.cpp) ignore the key, but the openai client
# refuses to start without a string.
PLACEHOLDER_KEY = "not-needed"
LANGUAGES = ("english", "keep")


@dataclass(frozen=True)
class RefineSettings:
    """An OpenAI-compatible endpoint for prompt refinement and dynamic motion scores.

    `base_url=None` and `api_key=None` together mean "not configured": the offline refiner is used.
    `language`: None or "english" asks for English captions (what the model was trained on),
    "keep" asks for the language of the user's prompt.
    The key is excluded from repr() so it cannot leak through logs or error messages.
    """

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str = DEFAULT_MODEL
    timeout_s: float = DEFAULT_TIMEOUT_S
    language: str | None = None
    retries: int = 1  # one retry, only for 429 / timeouts / connection errors
    backoff_s: float = 0.5  # tests shrink this

    def __post_init__(self) -> None:
        if self.language is not None and self.language.lower() not in LANGUAGES:
            raise UserError(f"refine language must be 'keep' or 'english', got {self.language!r}")
        if not self.timeout_s > 0:
            raise UserError(f"refine timeout must be > 0 seconds, got {self.timeout_s!r}")
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UserError(
                    "refine base URL must look like http://127.0.0.1:8000/v1, "
                    f"got {display_url(self.base_url)!r}"
                )
        if not self.model.strip():
            raise UserError("refine model name must not be empty")

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
        language: str | None = None,
        api_key: str | None = None,
        backoff_s: float = 0.5,
    ) -> RefineSettings:
        """Flags win over OPENAI_BASE_URL / OPENAI_API_KEY. The key never comes from a CLI
        flag (it would show up in shell history and process lists), only from the env or
        the Python caller (UI)."""
        return cls(
            base_url=(base_url or os.environ.get("OPENAI_BASE_URL") or "").strip() or None,
            api_key=(api_key or os.environ.get("OPENAI_API_KEY") or "").strip() or None,
            model=model or DEFAULT_MODEL,
            timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s),
            language=language,
            backoff_s=backoff_s,
        )

    @property
    def configured(self) -> bool:
        return self.base_url is not None or self.api_key is not None

    @property
    def endpoint(self) -> str:
        return (self.base_url or OPENAI_BASE_URL).rstrip("/")

    @property
    def is_official_openai(self) -> bool:
        return urlsplit(self.endpoint).hostname == "api.openai.com"

    @property
    def keep_language(self) -> bool:
        return (self.language or "english").lower() == "keep"

    def key_for_request(self) -> str | None:
        """The key to send, a placeholder for keyless local servers, None when one is missing."""
        if self.api_key:
            return self.api_key
        return None if self.is_official_openai else PLACEHOLDER_KEY

    def display_url(self) -> str:
        return display_url(self.endpoint)

    def request_url(self) -> str:
        """The endpoint without user:password and query string: what the client joins request
        paths onto ("/v1?key=Q" + "/chat/completions" would be a broken path)."""
        return display_url(self.endpoint).rstrip("/")

    def url_query(self) -> dict[str, str]:
        """Query parameters of the base URL (some proxies take a key there), sent with each request."""
        return dict(parse_qsl(urlsplit(self.base_url or "").query, keep_blank_values=True))

    def url_userinfo(self) -> tuple[str, str] | None:
        """(user, password) from the base URL, sent as HTTP basic auth; None without."""
        parts = urlsplit(self.base_url or "")
        if parts.username is None and parts.password is None:
            return None
        return unquote(parts.username or ""), unquote(parts.password or "")

    def url_secrets(self) -> list[str]:
        """What of the base URL must never be shown: password, user, query values (of 4+ characters:
        a flag like "1" is no secret, and blanking it would mangle messages)."""
        userinfo = self.url_userinfo() or ()
        return [value for value in (*userinfo, *self.url_query().values()) if len(value) >= 4]


def display_url(url: str) -> str:
    """The URL without user:password and query string (some proxies carry keys there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


_KEY_LIKE = re.compile(r"\b(sk|pk|key)-[A-Za-z0-9_\-*]{6,}")


def redact(text: str, secret: str | None) -> str:
    """Remove the key (and anything that looks like one) from server-provided text, on one line."""
    if secret:
        text = text.replace(secret, "***")
    text = _KEY_LIKE.sub("***", text)
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."

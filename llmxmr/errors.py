"""The errors llmxmr shows to users.

Every error that reaches the CLI is an ``LlmxmrError``: its message is one line meant for a person,
and ``exit_code`` follows the convention of click (2 for usage errors, 1 for failures).
"""

from __future__ import annotations


class LlmxmrError(Exception):
    """Base class: a failure explained in one line."""

    exit_code = 1


class UsageError(LlmxmrError):
    """The user asked for something that cannot work (bad file, empty question...)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or value is invalid."""


class ContextTooSmallError(UsageError):
    """The model's context window cannot hold the prompt plus a useful chunk."""


class MissingExtraError(UsageError):
    """An optional dependency is needed for what was asked."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{package}' package: pip install 'llmxmr[{extra}]'")


class ServerError(LlmxmrError):
    """The server cannot serve this run at all: every call would fail the same way, so the run
    (and a batch) stops instead of recording each call as failed."""


class ServerUnavailableError(ServerError):
    """The LLM server could not be reached."""

    def __init__(self, base_url: str, cause: str) -> None:
        super().__init__(
            f"cannot reach the LLM server at {base_url} ({cause}); start one with "
            "'llmxmr serve' (SGLang) or leave --base-url unset to use the embedded model"
        )
        self.base_url = base_url


class ServerRefusedError(ServerError):
    """The server refused us, not the request: a bad or missing API key (401, 403)."""

    def __init__(self, base_url: str, status: int, message: str) -> None:
        super().__init__(
            f"the LLM server at {base_url} refused the request (HTTP {status}: {message}); "
            "check --api-key or LLMXMR_API_KEY"
        )
        self.base_url = base_url


class GatewayError(LlmxmrError):
    """The smg gateway could not be started, or stopped on its own."""


class LLMCallError(LlmxmrError):
    """An LLM call failed for good (after the retries that could help, counted here)."""

    def __init__(self, message: str, transport_retries: int = 0) -> None:
        super().__init__(message)
        self.transport_retries = transport_retries

"""Task families as policies: one object per family owns its prompts and its rules of evidence
(see ``base.QuotingFamily``). ``family(name)`` gives the policy the config names."""

from __future__ import annotations

import difflib

from ..errors import ConfigError
from .base import GroundedReply, QuotingFamily, UnquotedFamily
from .retrieval import RetrievalFamily
from .support import SupportCheck

_FAMILIES: dict[str, QuotingFamily] = {
    "qa": QuotingFamily("qa"),
    "choice": QuotingFamily("choice"),
    "code": QuotingFamily("code", subject_in_text=False),
    "math": QuotingFamily("math", subject_in_text=False),
    "zh": QuotingFamily("zh"),
    "retrieval": RetrievalFamily("retrieval"),
    "summary": UnquotedFamily("summary"),
}


def family(name: str) -> QuotingFamily:
    """The policy of a task family; an unknown name is one line with the closest known one."""
    try:
        return _FAMILIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, _FAMILIES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown task type '{name}'{hint}; choose one of: {', '.join(_FAMILIES)}") from None


__all__ = ["GroundedReply", "QuotingFamily", "RetrievalFamily", "SupportCheck", "UnquotedFamily", "family"]

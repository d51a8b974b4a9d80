"""User-facing errors.

Anything the user can fix (a bad path, an infeasible request, a file with no valid record) raises
``DivscopeError``; the CLI prints its message as one line and exits non-zero, without a traceback.
Subclasses exist where a caller must tell mistakes apart by type rather than by reading the message.
"""

from __future__ import annotations

from collections.abc import Iterable


class DivscopeError(Exception):
    """A mistake in the user's input or request, with a message that names the fix."""


class MissingFeaturesError(DivscopeError):
    """Features (an incidence, embeddings, an extra array) that a step needs were never built in the workspace;
    the message names the ``divscope featurize`` command that builds them."""


class StaleFeaturesError(DivscopeError):
    """Cached features exist but cannot be used (built for another pool, or damaged); the message names the
    ``divscope featurize`` command that rebuilds them."""


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'micro'?)`` for a misspelt ``word`` close to one of ``choices``; "" when none is close."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

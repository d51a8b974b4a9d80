"""User-facing errors.

Anything the user can fix (a bad path, an infeasible request, a file with no valid record) raises
``DivscopeError``; the CLI prints its message as one line and exits non-zero, without a traceback.
Subclasses exist where a caller must tell mistakes apart by type rather than by reading the message.
"""


class DivscopeError(Exception):
    """A mistake in the user's input or request, with a message that names the fix."""


class MissingFeaturesError(DivscopeError):
    """Features (an incidence, embeddings, an extra array) that a step needs were never built in the workspace;
    the message names the ``divscope featurize`` command that builds them."""


class StaleFeaturesError(DivscopeError):
    """Cached features exist but cannot be used (built for another pool, or damaged); the message names the
    ``divscope featurize`` command that rebuilds them."""

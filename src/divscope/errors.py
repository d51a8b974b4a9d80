"""User-facing errors.

Anything the user can fix (a bad path, an infeasible request, a file with no valid record) raises
``DivscopeError``; the CLI prints its message as one line and exits non-zero, without a traceback.
"""


class DivscopeError(Exception):
    """A mistake in the user's input or request, with a message that names the fix."""

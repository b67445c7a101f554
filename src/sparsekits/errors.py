"""Errors a user sees as one line that names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input data: ``str(error)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        # One line whatever a damaged file puts in it: no line breaks, no control characters.
        self.problem = " ".join("".join(c if c.isprintable() else " " for c in problem).split())
        super().__init__(f"{path}: {self.problem}")

    def __reduce__(self):
        # Rebuild from (path, problem) so the error survives the trip back from a worker process.
        return (type(self), (self.path, self.problem))


def one_line(error: BaseException, path: str | Path | None = None) -> str:
    """``error`` as one line, ``"<path>: <problem>"``: the path is the one an InputError or an
    OSError names, else ``path`` (when given); an unexpected error's problem is its repr."""
    if isinstance(error, InputError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    problem = str(error) if isinstance(error, OSError) else repr(error)
    return problem if path is None else f"{path}: {problem}"

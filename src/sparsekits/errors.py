"""Errors a user sees as one line that names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input data: ``str(error)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        # Rebuild from (path, problem) so the error survives the trip back from a worker process.
        return (type(self), (self.path, self.problem))

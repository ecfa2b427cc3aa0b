"""One exception type for bad input, so every entry point can report it the same way.

The CLI turns a `NetgeomError` into a single line on stderr and exit code 2; library callers
get an ordinary `ValueError` subclass they can catch.
"""


class NetgeomError(ValueError):
    """Bad user input: names the offending key and what is allowed."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")

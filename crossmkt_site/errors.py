"""The one error type for mistakes a user can make; the API and commands turn it into a clear message."""


class ApplicationError(Exception):
    """Report a user-caused error: what is wrong, machine-readable code, and the field at fault."""

    def __init__(self, message: str, *, code: str = "invalid", field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.status = status

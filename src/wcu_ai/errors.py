"""The service's error tree.

Every error a user or operator can act on derives from WcuError; its docstring is the default
message. The CLI turns these into one line on stderr, the API into an HTTP problem, the runner
into a failed task with a reason.
"""

from __future__ import annotations


class WcuError(Exception):
    """The WeconnectU AI Server failed."""

    #: What `wcu-ai` exits with when this error ends a command.
    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(WcuError):
    """The configuration is invalid."""


class DatabaseUnavailableError(WcuError):
    """the database is unavailable; retry later"""


class StatementTimeoutError(DatabaseUnavailableError):
    """the database cancelled the query; retry later"""


class SessionStorageLockedError(DatabaseUnavailableError):
    """the agent's sessions are locked in the database by another transaction; retry later"""


class InsufficientStorageError(WcuError):
    """the API has no space left for the upload's scratch file (WCU_WORK_DIR); retry later"""


class OutOfDescriptorsError(WcuError):
    """the API is out of file descriptors (too many connections or files at once); retry shortly"""


class MigrationError(WcuError):
    """A database migration could not be applied."""


class TaskNotFoundError(WcuError):
    """No task has that id: check it with GET /v1/tasks."""

    exit_code = 3


class TaskStateError(WcuError):
    """The task is in a state that does not allow this operation."""

    exit_code = 4


class TaskError(WcuError):
    """A task failed."""


class PermanentTaskError(TaskError):
    """A task failed in a way that retrying cannot fix (bad input, unsupported content)."""


class DocumentError(PermanentTaskError):
    """The document could not be parsed."""


class ToolError(TaskError):
    """An external tool (LibreOffice, poppler) failed.

    Carries the argv, exit code and the tail of stderr so the reason stays actionable.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        argv: list[str] | None = None,
        returncode: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.argv = argv or []
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class ToolMissingError(PermanentTaskError):
    """A required external tool is not on PATH."""


class ToolTimeoutError(ToolError):
    """An external tool ran past its time limit; its whole process group was killed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        argv: list[str] | None = None,
        timeout: float = 0.0,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message, argv=argv, returncode=None, stderr_tail=stderr_tail)
        self.timeout = timeout


class ToolOutputLimitError(ToolError):
    """An external tool wrote more than the output allowed; its whole process group was killed."""

    def __init__(
        self, message: str | None = None, *, argv: list[str] | None = None, limit_bytes: int = 0
    ) -> None:
        super().__init__(message, argv=argv, returncode=None)
        self.limit_bytes = limit_bytes


class EncryptedDocumentError(DocumentError):
    """The PDF is password-protected: remove the password and upload it again."""


class DocumentLimitError(DocumentError):
    """The document is over a configured limit (pages, size or uncompressed size)."""


class DocumentTimeoutError(DocumentError):
    """Parsing the document took longer than the time allowed per document."""


class AgentRunError(WcuError):
    """The agent could not answer (its model or its storage failed); retry later."""


class SessionBusyError(WcuError):
    """Another run of this session is still going: send the message again once it has answered."""

    def __init__(self, message: str | None = None, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class SessionNotFoundError(WcuError):
    """No such session of this agent and user."""

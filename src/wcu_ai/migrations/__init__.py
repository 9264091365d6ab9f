"""Forward-only SQL migrations shipped inside the package (see MigrationTool)."""

from wcu_ai.migrations.tool import Migration, MigrationStatus, MigrationTool, packaged_migrations

__all__ = ["Migration", "MigrationStatus", "MigrationTool", "packaged_migrations"]

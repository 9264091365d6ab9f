"""The task queue on ai_server_tasks: model, SQL operations and the handler registry."""

"""The HTTP API: FastAPI app factory, dependencies and one router per resource."""

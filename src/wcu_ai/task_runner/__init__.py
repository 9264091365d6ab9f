"""The singleton task runner: database initialisation, leadership, the worker loop."""

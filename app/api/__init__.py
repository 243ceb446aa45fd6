"""JSON REST API under /api: thin routes that parse, call one service and map the result."""

"""HTTP layer: FastAPI routers and schemas, one module per API dialect."""

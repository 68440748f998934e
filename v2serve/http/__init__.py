"""HTTP transport (starlette + uvicorn)."""

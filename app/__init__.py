"""The HTTP service: `uvicorn app.main:app`."""

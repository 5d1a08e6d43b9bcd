"""The process model behind `python -m app`: one uvicorn server per process with our timeouts
(serving.py) and header deadline (protocol.py), and a supervisor that starts the worker
processes (workers.py) and deals connections to them in turn (dealer.py).

May import app.settings and app.observability; knows the ASGI app only by its import string
(`serving.APP`, "app.main:app"), never app.http or app.inference.
"""

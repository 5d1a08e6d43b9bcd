"""The HTTP service: `uvicorn app.main:app`, or `python -m app`.

- http/: the HTTP surface: routes, middleware, errors as JSON, upload parsing.
- inference/: image bytes to predictions: predictor, micro-batcher, service, watchdog.
- server/: the process model behind `python -m app`: uvicorn per process, supervisor.

main.py builds the app from http/, lifespan.py starts inference/ (reload.py loads the model,
and again on SIGHUP), __main__.py runs server/; settings.py and observability.py are shared by
all three.
"""

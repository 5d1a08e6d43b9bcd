"""The inference engine: image bytes to class probabilities (predictor.py), concurrent requests
batched onto one inference thread (batching.py), decode pool, limits and the idle fast path
(service.py), and the watchdog that ends the process when that thread dies or hangs.

Knows nothing about HTTP, FastAPI or processes: imports only models/ and itself. Settings and
metrics reach it as plain values and callbacks (app/lifespan.py wires them).
"""

"""The Open Inference Protocol (KServe v2) beside our own API: request and response bodies
(codec.py), the model's tensors (model.py), the error shape every /v2 answer uses (errors.py)
and the OpenAPI schemas (schemas.py). The routes are in app/http/routes/v2.py.

May import app.inference, app.settings and models/, like the rest of app.http.
"""

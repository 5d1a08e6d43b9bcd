"""The HTTP surface: routes (routes/), middleware, error responses, multipart parsing, response
schemas, the Open Inference Protocol's bodies and tensors (v2/), the OpenAPI document
(openapi.py, from the routes' responses.py), the API key, and the dependencies that hand
handlers the running service.

Handlers validate, await inference/, and shape the answer. May import app.inference,
app.settings, app.observability and models/; never app.server, app.main or app.lifespan.
"""

"""`lmforge serve` (`lmforge.serve()`): an OpenAI-compatible HTTP server (FastAPI + uvicorn) over
model directories. The package is `server`, not `serve`, so that `lmforge.serve` stays the function.

app.py      the routes (create_app)
schemas.py  the request bodies, with OpenAI's field names and limits
errors.py   OpenAI's error object and the handlers that send it
models.py   the registry of served models (by id: the directory's name)
decoding.py one decode at a time in a worker thread: queue bound, cancel, timeout, stop strings
sse.py      Server-Sent Events
server.py   serve(): check the options, load the models, run uvicorn
"""

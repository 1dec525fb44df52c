"""`lmforge serve` (`lmforge.serve()`): an OpenAI-compatible HTTP server (FastAPI + uvicorn) over
model directories. The package is `server`, not `serve`, so that `lmforge.serve` stays the function.

app.py        the routes (create_app)
schemas.py    the request bodies, with OpenAI's field names and limits
errors.py     OpenAI's error object and the handlers that send it
models.py     the registry of served models (by id: the directory's name)
batcher.py    the decode loop: continuous batching of every request, the queue bound
decoding.py   one request's rows: stop strings, cancel, timeout, what to stream
logprobs.py   OpenAI's logprobs objects
sse.py        Server-Sent Events
playground.py the web playground's static files (static/)
serve.py      serve(): check the options, load the models, run uvicorn
"""

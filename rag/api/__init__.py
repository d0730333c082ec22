"""The HTTP API (`python -m rag.serve`): OpenAI-compatible chat with citations, retrieval, knowledge-base admin.

`app.py` builds the FastAPI application (routes, auth, limits); `errors.py` answers every error in OpenAI's
shape; `schemas.py` holds the request bodies; `streaming.py` streams an answer as server-sent events; `resources.py` holds what requests
share (embedders, LLM client and its queue, loaded knowledge-base versions); `jobs.py` runs ingests in the
background; `shapes.py` turns answers and hits into the response bodies.
"""

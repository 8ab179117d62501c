"""`localr1 serve`: an OpenAI-compatible HTTP server over the parallel decoder.

A front end at the TUI's level: it imports the core (engine, models, store, chat_session) and
nothing imports it but `localr1.cli`. The modules, from the wire inwards: `app` (Starlette
routes), `auth`, `request_parsing` (requests in), `api_error`, `responses` (responses and SSE
chunks out), `stop_strings`, `model_names`, `scheduler` (the decoder thread, model swaps),
`chat_log` (--log) and `server` (uvicorn).
"""

"""routekit as a drop-in ``openai`` client: what libraries built on the openai client reach for.

Owns the openai-shaped surface beyond ``chat.completions.create`` — errors that are also
openai's exception classes (``errors``), the synthetic HTTP objects those need (``http``),
``with_raw_response`` / ``with_streaming_response`` (``raw``), ``parse`` and the ``stream``
helper (``parsing``), and the client attributes (``client``). Every request still goes through
``_pipeline`` (``params.start`` → ``RequestState`` → the drivers): nothing here routes,
retries or calls a provider.

No module here imports ``openai`` at import time (``import routekit`` stays fast); they import
it inside the functions that need it, which run only once a router is used.
"""

"""One request's life: its state (``request``), the attempts over a plan (``attempts``),
retry strategies (``retry``), streams (``streams``), the route record (``route``) and the
result types (``results``)."""

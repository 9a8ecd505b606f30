"""Developer and operator tooling: the `meshctl` command, the embedded stack (PostgreSQL, Redis,
an SMTP sink, Envoy), the edge's configuration and the OpenAPI document, dev certificates.
It reaches the services only through their contracts; no service imports it."""

"""What the edge's rate limit filter tells ratelimit_svc about each request: the domain and the
descriptor keys both sides agree on. Envoy's configuration is rendered with them (meshctl.edge) and
ratelimit_svc reads them."""

DOMAIN = "invitemesh"
ROUTE_KEY = "route"
"""The gRPC method the request's route reaches, `pages` for web_svc's pages, or `*` in a rule for
every other route."""
PAGES = "pages"
"""The route of every page and static file web_svc serves."""
CLIENT_KEY = "remote_address"
"""Envoy's own key for the client's address."""

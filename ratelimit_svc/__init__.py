"""ratelimit_svc: Envoy's global rate limit service (DESIGN §4)."""

"""auth_svc: see DESIGN §4."""

"""invite_svc: see DESIGN §4."""

"""admin_svc: see DESIGN §4."""

"""mail_svc: see DESIGN §4."""

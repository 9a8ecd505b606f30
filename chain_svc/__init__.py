"""chain_svc: see DESIGN §4."""

"""What every invitemesh service shares: settings, serving, trust, errors, storage, telemetry."""

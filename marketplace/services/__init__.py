"""Domain services: they own transactions, enforce rules and raise domain errors."""

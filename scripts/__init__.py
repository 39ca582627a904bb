"""Small single-purpose project scripts."""

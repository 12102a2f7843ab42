"""Stand-ins for the services and clients the unit tests must not need, each written once."""

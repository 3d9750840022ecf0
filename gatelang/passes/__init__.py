"""Plan passes: probe, localize, gate and verify, registered by their op name."""

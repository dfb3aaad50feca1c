"""Settings (every key a method reads), TOML presets, and the resolver that merges flags,
sidecars and presets into the settings and task options of one run."""

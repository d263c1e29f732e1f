"""Settings from defaults, config.toml, remembered choices, .env, the environment and flags."""

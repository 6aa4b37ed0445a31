"""Experiment configs: the default config and its fields (`defaults`), the one check of a config
at start-up (`validate`), an older run's `config.json` brought up to today's fields (`upgrade`),
the `--config` flag's failures as one line (`command_line`), and the configs shipped with the
package (`shipped`)."""

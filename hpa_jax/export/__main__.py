"""`python -m hpa_jax.export`: see `hpa_jax.export.command`."""

if __name__ == "__main__":
    from hpa_jax.export.command import cli

    cli()

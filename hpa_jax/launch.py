"""`python -m hpa_jax.launch --num_processes=N -- <hpa_jax.main's flags>` (`hpa-jax-launch`):
N local processes of `hpa_jax.main` joined by `jax.distributed`; `hpa_jax.runtime.launch` runs them."""

from hpa_jax.runtime.launch import main

if __name__ == "__main__":
    main()

"""The console scripts (`controlnext-*`): thin Hydra front ends over the library.

Each module has `main(argv=None)`, run under the convention of `controlnext_jax.cli`.
"""

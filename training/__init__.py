"""LongVid's trainer: ``python training/train.py`` (entry point) and its modules.

- ``config.py`` — every setting, from defaults < a JSON/TOML file < command-line flags
- ``data.py`` — videos (and still images) -> clips, skip report, latent cache, data order
- ``noise_levels.py`` — sigma sampling and PA-VDM progressive levels from the sampler's table
- ``ema.py`` — EMA of the trainable weights
- ``checkpointing.py`` — atomic checkpoint folders, ``latest`` pointer, resume
- ``determinism.py`` — derived seeds and saved random states (exact resume)
- ``smoke.py`` — a CPU smoke run on a tiny model with synthetic videos

The loss is :mod:`longvid_core.losses`; models, schedules and loading are ``longvid_core``'s, the
same code the ComfyUI nodes run. Recipes: ``docs/training.md``.
"""

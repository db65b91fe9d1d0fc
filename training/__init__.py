"""LongVid's trainer: ``python training/train.py`` (entry point) and its modules.

- ``train.py`` — run setup (accelerator, data, optimizer) and the training loop
- ``config.py`` — every setting, from defaults < a JSON/TOML file < command-line flags
- ``data.py`` — videos (and still images) -> clips, skip report, data order
- ``pixels.py`` — a clip's frames read from a file, still images, motion score and bucket
- ``latent_cache.py`` — VAE latents of clips, kept on disk between runs (``--cache-dir``)
- ``model_setup.py`` — the model to train and the denoiser module around it
- ``batches.py`` — batches (latents, conditioning) and their losses
- ``noise_levels.py`` — sigma sampling and PA-VDM progressive levels from the sampler's table
- ``rollout.py`` — the rollout loss (``--progressive-rollout-fraction``)
- ``ema.py`` — EMA of the trainable weights
- ``checkpointing.py`` — atomic checkpoint folders and the ``latest`` pointer
- ``checkpoint_contents.py`` — what a checkpoint holds: saving a run and resuming it exactly
- ``optimizers.py`` — AdamW, or AdamW with 8-bit states
- ``distributed.py`` — one device, DDP or DeepSpeed ZeRO-2 processes, as accelerate starts them
- ``memory/`` — training memory: measured on the CPU (``python -m training.memory``), estimated for a GPU
- ``train_log.py`` — the log lines and TensorBoard (accelerate's tracker); the log restarts at a resumed step
- ``progress_bar.py`` — the tqdm bar on a terminal
- ``lr_schedule.py`` — diffusers' learning-rate schedules, saved in checkpoints
- ``resume_check.py`` — a resume refuses changed settings and another base
- ``user_errors.py`` — user errors as one line, bugs with their traceback
- ``determinism.py`` — derived seeds and saved random states (exact resume)
- ``smoke.py`` — a CPU smoke run on a tiny model with synthetic videos

The loss is :mod:`longvid_core.networks.losses`; models, schedules and loading are ``longvid_core``'s,
the same code the ComfyUI nodes run. Recipes: ``docs/training.md``.
"""

"""The networks: SVD's UNet, temporal VAE and CLIP image encoder, the EDM denoiser over them, the
loaded model (:class:`~.model.SVDModel`), ExVideo's modules, windowed VAE decoding, the finite check
of their outputs and the training loss. Everything that runs a network's forward pass lives here.

May import: torch, diffusers, transformers and the shared words (``longvid_core.problems``,
``.shapes``, ``.progress``). Never weights on disk, sampling, evaluation or the run.
"""

"""What the engine makes must not drift: the bundled model sampled at 32x32 in every mode, each
run's latents compared with references saved before longvid_core was reorganised (issue 41).

``tests/data/pinned_latents.safetensors`` holds the reference latents; ``PINNED_SHA256`` holds
the SHA-256 of each reference's float32 bytes, so the file cannot change without this test
changing too. A run must match its reference to 1e-5: float sums come out bit-identical on one
machine, but another CPU (CI's) may order them differently, so equal bits are not required.
Regenerate (only for a deliberate change of behaviour): ``python tests/test_pinned_outputs.py``.
"""

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from longvid_core import load_svd, pipeline

REFERENCES = Path(__file__).resolve().parent / "data" / "pinned_latents.safetensors"
SIZE = 32  # the bundled model's size: 8x8 latents
BASE = dict(frames=10, window=4, chunk=2, steps=4, cfg=2.0, min_cfg=1.0, seed=7)

# name -> (settings, keyframe starts, prefix frames)
CASES = {
    "progressive": (dict(mode="progressive"), (0,), 0),
    "progressive_partitions": (dict(mode="progressive", window=8, steps=8, partitions=2), (0,), 0),
    "progressive_lookahead": (dict(mode="progressive", window=8, steps=8, partitions=2, lookahead=True), (0,), 0),
    "progressive_context_sigma": (dict(mode="progressive", context_sigma=0.05), (0,), 0),
    "auto": (dict(mode="auto"), (0,), 0),
    "replacement_without_noise": (dict(mode="replacement_without_noise"), (0,), 0),
    "replacement_with_noise": (dict(mode="replacement_with_noise"), (0,), 0),
    "full_sequence": (dict(mode="full_sequence", frames=8), (0,), 0),
    "context_windows": (dict(mode="context_windows", frames=12, window=6, context_overlap=2), (0,), 0),
    "progressive_keyframes": (dict(mode="progressive"), (0, 6), 0),
    "replacement_keyframes": (dict(mode="replacement_with_noise"), (0, 6), 0),
    "context_windows_keyframes": (dict(mode="context_windows", frames=12, window=6, context_overlap=2), (0, 6), 0),
    "progressive_prefix": (dict(mode="progressive"), (0,), 3),
    "replacement_prefix": (dict(mode="replacement_without_noise"), (0,), 3),
    "progressive_cached": (dict(mode="progressive", window=8, steps=8, cache_interval=2), (0,), 0),
    "context_windows_cached": (dict(mode="context_windows", frames=12, window=6, context_overlap=2,
                                    cache_interval=2), (0,), 0),
}
DECODED = "progressive_decoded"  # the frames of "progressive" through the streaming decoder

PINNED_SHA256 = {
    "progressive": "3efc6fd965418d9a54b6924ac090b00ca720ccbef90a647f18728da534b9e2bd",
    "progressive_partitions": "610d55b736eca9b4ba13f2277ae88bb1de298681ceaeb23a5c985765b57c5f14",
    "progressive_lookahead": "6d7f62d0ca5c31fd36283df3a377e3bc60d7676d0dedd1c53f5cef2879484c55",
    "progressive_context_sigma": "40ce050983f0c8de43814d7b95b52a450312b4eff21c69dae8589c85cff78821",
    "auto": "e830077279fc3b27a0b69b4727551d6addef65b45819ba285bbe1f9f69ea4356",
    "replacement_without_noise": "38e009b21618f1940ff9b84106b905f0f84ce01bedb0331596e517ee1f07cd44",
    "replacement_with_noise": "96b032f7271c0350ce659f3679bed799c2cb260af58a0d53178450b7945ba760",
    "full_sequence": "fa68d4e104797715e8cbb4d439112c6f7306a5c640e003c98d940de9d8f0a46f",
    "context_windows": "4ad5f79b42efedcbc4cadc3042812f3a84f9204443961ee114969d0e3e980f6f",
    "progressive_keyframes": "98d1f0b76bcf2876c3b510a3948d5291afa3b6bf81025c325306657ecf3e917c",
    "replacement_keyframes": "4065bc9e629ca7d5d1a89313bfbb698ec6204f1aca2d6dd0d554e2d847884c39",
    "context_windows_keyframes": "6f71f1ea9b6fa4651a9bc9521c73e25df9f7750aec276a809536c48c154129b3",
    "progressive_prefix": "c4cfae941cc391543f5ff799156cad34c4d8917c8f0ab8c90fdfaf05141cfb70",
    "replacement_prefix": "746c5bb5decd0167cbac379c7b112d370aff3a5adb6c4f696b86741c76a33b43",
    "progressive_cached": "a235e5d4c520d04238f610a79aef44fc80930ecc36673847116d69be1452be8e",
    "context_windows_cached": "ffb45eb082676bfcd2a85ac8d7e66d880061ae84e60cbd0c3d2a10d70e29a531",
    "progressive_decoded": "db1e6bf63d25ea5ac9eb4bd134adfc62df9857cc2ab7d1687c3f7f63be2935f9",
}


@pytest.fixture(scope="module")
def model():
    return load_svd(pipeline.BUNDLED_MODEL)


def run(model, name: str) -> torch.Tensor:
    overrides, starts, prefix_frames = CASES[name]
    images = torch.rand(len(starts), SIZE, SIZE, 3, generator=torch.Generator().manual_seed(11))
    keyframes, _ = pipeline.condition_images(model, images, SIZE, SIZE, starts, fps=8, seed=3)
    prefix = None
    if prefix_frames:
        h, w = keyframes[0][1].concat_latent.shape[-2:]
        prefix = torch.randn(1, prefix_frames, 4, h, w, generator=torch.Generator().manual_seed(5))
    settings = pipeline.SamplingSettings(**{**BASE, **overrides})
    return pipeline.generate(model, keyframes, settings, pipeline.LatentSink(), prefix=prefix).contiguous()


def outputs(model) -> dict[str, torch.Tensor]:
    latents = {name: run(model, name) for name in CASES}
    with torch.no_grad():
        latents[DECODED] = pipeline.decode_into(model, latents["progressive"],
                                                pipeline.ImageSink(window=4, overlap=2)).contiguous()
    return latents


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.float().contiguous().numpy().tobytes()).hexdigest()


def test_the_references_are_the_pinned_ones():
    references = load_file(REFERENCES)
    assert set(references) == set(CASES) | {DECODED}
    assert {name: sha256(tensor) for name, tensor in references.items()} == PINNED_SHA256


@pytest.mark.parametrize("name", [*CASES, DECODED])
def test_every_mode_makes_the_pinned_latents(model, name):
    reference = load_file(REFERENCES)[name]
    if name == DECODED:
        with torch.no_grad():
            found = pipeline.decode_into(model, run(model, "progressive"), pipeline.ImageSink(window=4, overlap=2))
    else:
        found = run(model, name)
    assert found.shape == reference.shape
    assert torch.isfinite(found).all()
    torch.testing.assert_close(found, reference, rtol=0, atol=1e-5)


if __name__ == "__main__":
    torch.set_num_threads(1)
    made = outputs(load_svd(pipeline.BUNDLED_MODEL))
    save_file(made, REFERENCES)
    for name, tensor in made.items():
        print(f'    "{name}": "{sha256(tensor)}",')

"""Streaming decode (overlapping, cross-faded windows) and the mp4 writer."""

import itertools
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch

from longvid_core.evaluation.tiny import tiny_vae
from longvid_core.networks.decoding import (
    DEFAULT_DECODE_OVERLAP,
    DEFAULT_DECODE_WINDOW,
    StreamingDecoder,
    approximate_rgb,
    crossfade_weights,
    decode,
    decode_settings,
    decode_window,
    frame_windows,
    latents_to_frames,
)
from longvid_core.networks.vae import VAE_SCALE
from longvid_core.progress import Cancelled
from longvid_core.run.video_io import VideoWriter, frame_rate, read_video, write_latent_video


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(seed=3)


class PixelCopyVAE(torch.nn.Module):
    """Stands in for the VAE where only the window bookkeeping matters: "decodes" each latent to its
    first three channels, upsampled 2x (frame by frame, so windows change nothing)."""

    config = SimpleNamespace(latent_channels=4)

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the decoder a device and dtype

    def decode(self, z, num_frames):
        return SimpleNamespace(sample=z[:, :3].repeat_interleave(2, -1).repeat_interleave(2, -2).tanh())


def latents(frames, seed=0, size=8):
    return torch.randn(1, frames, 4, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------- windows


@pytest.mark.parametrize("num_frames, window, overlap, expected", [
    (5, 2, 0, [(0, 2), (2, 4), (4, 5)]),  # back to back, as before overlap existed
    (10, 4, 1, [(0, 4), (3, 7), (6, 10)]),
    (11, 4, 1, [(0, 4), (3, 7), (6, 10), (7, 11)]),  # the remainder: a full window ending at the last frame
    (3, 4, 2, [(0, 3)]),
    (14, 14, 4, [(0, 14)]),
])
def test_frame_windows(num_frames, window, overlap, expected):
    assert frame_windows(num_frames, window, overlap) == expected


def test_streaming_decoder_decodes_exactly_the_frame_windows_and_holds_at_most_one_window():
    vae = PixelCopyVAE()
    for num_frames, window, overlap in itertools.product((1, 4, 7, 9, 16), (1, 2, 3, 4, 6), (0, 1, 2, 3)):
        if 2 * overlap > window:
            continue
        decoder = StreamingDecoder(vae, window, overlap)
        out = []
        z = latents(num_frames, size=2)
        for latent in z.unbind(1):
            out.append(decoder.push(latent))
            assert len(decoder._latents) <= window
            assert decoder._tail is None or decoder._tail.shape[1] <= overlap
        out.append(decoder.finish())
        assert decoder.windows == frame_windows(num_frames, window, overlap), (num_frames, window, overlap)
        frames = torch.cat([o for o in out if o is not None], dim=1)
        assert frames.shape[1] == num_frames == decoder.frames_emitted
        # a frame-by-frame "decoder" gives the same frame from every window: blending must not change it
        torch.testing.assert_close(frames, latents_to_frames(vae.decode(z[0] / VAE_SCALE, 0).sample.unsqueeze(0)))


def test_overlapping_windows_are_cross_faded(vae):
    z = latents(7)
    frames = decode(vae, z, window=4, overlap=1)  # windows (0, 4), (3, 7)
    first = latents_to_frames(decode_window(vae, z[:, 0:4]))
    second = latents_to_frames(decode_window(vae, z[:, 3:7]))
    torch.testing.assert_close(frames[:, :3], first[:, :3])
    torch.testing.assert_close(frames[:, 3], torch.lerp(first[:, 3], second[:, 0], 0.5))  # weight 1/2 for one frame
    torch.testing.assert_close(frames[:, 4:], second[:, 1:])
    assert crossfade_weights(3).tolist() == [0.25, 0.5, 0.75]


def test_overlap_zero_is_the_plain_chunked_decode(vae):
    z = latents(5, seed=2)
    pieces = [latents_to_frames(decode_window(vae, z[:, s:e])) for s, e in frame_windows(5, 2, overlap=0)]
    assert torch.equal(decode(vae, z, window=2, overlap=0), torch.cat(pieces, dim=1))


def test_one_default_window_and_overlap_for_every_decoding_path(vae):
    assert decode_settings() == (DEFAULT_DECODE_WINDOW, DEFAULT_DECODE_OVERLAP) == (14, 4)
    assert decode_settings(4) == (4, 2) and decode_settings(1) == (1, 0)  # at most half the window
    assert frame_windows(30) == frame_windows(30, 14, 4) == [(0, 14), (10, 24), (16, 30)]
    decoder = StreamingDecoder(vae)
    assert (decoder.window, decoder.overlap) == (14, 4)
    z = latents(9, seed=5, size=4)
    torch.testing.assert_close(decode(vae, z, window=4), decode(vae, z, window=4, overlap=2))


def test_decoding_cancel_hands_out_the_window_then_stops(vae):
    decoder = StreamingDecoder(vae, 2, 0, callback=lambda progress: False)
    z = latents(5, size=4)
    assert decoder.push(z[:, 0]) is None
    assert decoder.push(z[:, 1]).shape[1] == 2  # the window that asked to stop is handed out
    with pytest.raises(Cancelled, match="decoding cancelled after 2 decoded frames"):
        decoder.push(z[:, 2])


def test_decoder_refuses_more_overlap_than_half_a_window(vae):
    with pytest.raises(ValueError, match=r"decode_overlap: expected at most half the decode window \(4\).*found 3"):
        StreamingDecoder(vae, 4, 3)


def test_approximate_rgb_is_the_fixed_linear_map():
    latent = torch.zeros(1, 4, 3, 5)
    latent[:, 0] = 1.0
    rgb = approximate_rgb(latent)
    assert rgb.shape == (3, 5, 3)
    torch.testing.assert_close(rgb[0, 0], (torch.tensor([0.3512, 0.2297, 0.3227]) + 1) / 2)


# ----------------------------------------------------------------------------------- writer


def test_video_writer_writes_frames_that_read_back(tmp_path):
    path = tmp_path / "sub" / "clip.mp4"
    ramp = torch.linspace(0, 1, 6)[:, None, None, None].expand(6, 32, 48, 3).contiguous()
    with VideoWriter(path, 12) as writer:
        writer.write(ramp[:4])
        writer.write(ramp[4])  # a single frame [H, W, 3]
        writer.write((ramp[5:] * 255).round().to(torch.uint8))
    assert writer.frames_written == 6
    frames, fps = read_video(path)
    assert frames.shape == (6, 32, 48, 3) and fps == 12
    assert (frames.mean(dim=(1, 2, 3)) - ramp.mean(dim=(1, 2, 3))).abs().max() < 0.02


def test_video_writer_errors_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="even width and height; the frames are 33x32"):
        VideoWriter(tmp_path / "odd.mp4", 8).write(torch.zeros(1, 32, 33, 3))
    writer = VideoWriter(tmp_path / "sizes.mp4", 8)
    writer.write(torch.zeros(1, 32, 32, 3))
    with pytest.raises(ValueError, match="every frame of a video must have the same size"):
        writer.write(torch.zeros(1, 16, 16, 3))
    writer.close()
    with pytest.raises(ValueError, match="crf must be between 0"):
        VideoWriter(tmp_path / "crf.mp4", 8, crf=60)
    assert frame_rate(7.5) == Fraction(15, 2) and frame_rate(29.97) == Fraction(2997, 100)


def test_write_latent_video_streams_a_generator_into_an_mp4(vae, tmp_path):
    z = latents(9, seed=4)
    pulled = []

    def frames():  # a generator, like a sampler: nothing is materialised up front
        for i in range(z.shape[1]):
            pulled.append(i)
            yield z[:, i]

    decoded = []
    written = write_latent_video(vae, frames(), tmp_path / "v.mp4", 6, window=4, overlap=1, frames_total=9,
                                 callback=lambda p: decoded.append((p.done, p.total)))
    assert written == 9 and pulled == list(range(9))
    assert decoded == [(end, 9) for _, end in frame_windows(9, 4, 1)]
    video, fps = read_video(tmp_path / "v.mp4")
    assert video.shape == (9, 16, 16, 3) and fps == 6
    assert (video - decode(vae, z, window=4, overlap=1)[0]).abs().mean() < 0.03

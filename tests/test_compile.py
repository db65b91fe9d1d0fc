"""torch.compile of the UNet: same output, and a fallback with one clear message when it fails."""

import logging

import pytest
import torch

from longvid_core.networks.compile import compile_unet
from longvid_core.weights.loading import load_svd
from tests.tiny import unet_inputs, write_tiny_sgm


@pytest.fixture(scope="module")
def svd_file(tmp_path_factory):
    return write_tiny_sgm(tmp_path_factory.mktemp("compile") / "tiny.safetensors")


def unet_call(model, frames=5):
    sample, context, time_ids = unet_inputs(batch=1, frames=frames, cross=model.unet.config.cross_attention_dim)
    with torch.no_grad():
        return model.unet(sample, torch.full((1, frames), 0.3), context, time_ids)


def test_compiled_unet_gives_the_same_output_and_keeps_its_names(svd_file):
    plain = load_svd(svd_file)
    compiled = load_svd(svd_file, compile="eager")  # traced by dynamo (inductor's C++ build: bench only)
    assert compiled.unet.compiled_with == "eager"
    assert compiled.unet.state_dict().keys() == plain.unet.state_dict().keys()  # saving is unchanged
    torch.testing.assert_close(unet_call(compiled), unet_call(plain), rtol=1e-5, atol=1e-5)
    assert compiled.unet.compile_problem is None and compiled.warnings == []


def test_a_failing_compile_falls_back_to_eager_and_says_so_once(svd_file, caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler found\nmore lines of detail")

    plain = load_svd(svd_file)
    model = load_svd(svd_file)
    compile_unet(model.unet, broken_backend, on_problem=model.warnings.append)
    with caplog.at_level(logging.WARNING, logger="longvid"):
        first, second = unet_call(model), unet_call(model)
    torch.testing.assert_close(first, unet_call(plain))
    torch.testing.assert_close(second, first)
    assert len(model.warnings) == 1 and model.warnings[0].startswith("torch.compile (custom) failed, running the "
                                                                     "UNet uncompiled: ")
    assert "no C++ compiler found" in model.warnings[0] and "more lines" not in model.warnings[0]
    assert sum("torch.compile" in r.getMessage() for r in caplog.records) == 1


def test_bad_inputs_raise_the_real_error_not_a_compile_warning(svd_file):
    model = load_svd(svd_file, compile="eager")
    with pytest.raises(RuntimeError, match="expected input.* to have 8 channels, but got 3"):
        model.unet(torch.randn(1, 5, 3, 8, 8), torch.ones(1, 5), torch.randn(1, 1, 32), torch.ones(1, 3))
    assert model.warnings == []


def test_unknown_backend_is_refused(svd_file):
    with pytest.raises(ValueError, match="compile backend must be one of"):
        load_svd(svd_file, compile="tensorrt")

"""The generation pipeline: one run checked and planned before any model call, its sinks, and the
package's import graph (no module of longvid_core imports one that imports it back)."""

import ast
from pathlib import Path

import pytest
import torch

from longvid_core import pipeline, samplers
from longvid_core.decoding import decode
from longvid_core.schedules import get_sigmas_karras
from longvid_core.tiny import tiny_svd

PACKAGE = Path(__file__).resolve().parents[1] / "longvid_core"


# ----------------------------------------------------------------------------------- import graph


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or (PACKAGE.parent / relative).is_dir()


def import_graph() -> dict[str, set[str]]:
    """Module -> the longvid_core modules it imports anywhere in its text (lazy imports included)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name.startswith("longvid_core")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{base}.{node.module}" if node.module else base
                elif node.module and node.module.startswith("longvid_core"):
                    base = node.module
                else:
                    continue
                targets = {f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}")}
                edges |= targets or {base}
                if len(targets) < len(node.names):
                    edges.add(base)  # names from the module itself
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_reader_sees_lazy_imports_and_finds_circles():
    graph = import_graph()
    assert "longvid_core.pipeline" in graph["longvid_core.cli"]  # imported at the top
    assert "longvid_core.tiny" in graph["longvid_core.cli"]  # imported inside smoke()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_of_longvid_core_imports_one_that_imports_it_back():
    assert find_cycle(import_graph()) is None


# ----------------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def model():
    return tiny_svd(seed=0)


def keyframes(model, size=16):
    image = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(0))
    return pipeline.condition_images(model, image, size, size)[0]


class CountingModel:
    """The model with its denoiser calls counted."""

    def __init__(self, model):
        self.inner, self.calls = model, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def denoise(self, x, sigma, cond):
        self.calls += 1
        return self.inner.denoise(x, sigma, cond)


SMALL = pipeline.SamplingSettings(7, "progressive", window=4, chunk=2, steps=4, cfg=1.5, min_cfg=1.0, seed=3)


def test_latents_are_the_samplers_own_and_the_plan_is_exact(model):
    counting = CountingModel(model)
    cond = keyframes(model)
    run = pipeline.prepare_run(counting, cond, SMALL)
    assert counting.calls == 0 and run.total_frames == 7
    latents = run.into(pipeline.LatentSink())
    assert counting.calls == run.plan.denoiser_calls == samplers.plan_progressive(7, window=4, chunk=2,
                                                                                  steps=4).denoiser_calls
    with torch.no_grad():
        expected = samplers.sample_progressive(model.denoise, cond, 7, run.frame_shape, get_sigmas_karras(4),
                                               window=4, chunk=2, seed=3, cfg=1.5, min_cfg=1.0)
    assert torch.equal(latents, expected)


def test_image_sink_decodes_as_the_decoder_does_and_reports_both_stages(model):
    cond = keyframes(model)
    latents = pipeline.generate(model, cond, SMALL, pipeline.LatentSink())
    seen = []
    frames = pipeline.generate(model, cond, SMALL, pipeline.ImageSink(window=4, overlap=1),
                               callback=lambda p: seen.append((p.stage, p.done, p.total)))
    assert torch.equal(frames, decode(model.vae, latents, window=4, overlap=1))
    stages = [stage for stage, _, _ in seen]
    assert stages.count("sampling") == pipeline.plan_sampling(SMALL).denoiser_calls
    assert ("decoding", 7, 7) in seen


def test_a_prefix_comes_first_bit_for_bit(model):
    cond = keyframes(model)
    prefix = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latents = pipeline.generate(model, cond, SMALL, pipeline.LatentSink(), prefix=prefix)
    assert latents.shape == (1, 10, 4, 8, 8) and torch.equal(latents[:, :3], prefix)


def test_comfy_latents_round_trip_and_are_unscaled():
    scaled = torch.randn(1, 3, 4, 8, 8)
    comfy = pipeline.latents_to_comfy(scaled)
    assert comfy["samples"].shape == (3, 4, 8, 8)
    torch.testing.assert_close(comfy["samples"] * 0.18215, scaled[0])
    torch.testing.assert_close(pipeline.latents_from_comfy(comfy), scaled)
    with pytest.raises(ValueError, match=r"prefix: expected LATENT samples \[frames, 4, h, w\]; found \(3, 8, 8\)"):
        pipeline.latents_from_comfy({"samples": torch.zeros(3, 8, 8)}, "prefix")


@pytest.mark.parametrize("settings, prefix, message", [
    (dict(mode="full_sequence", frames=26), None, r"plain SVD was trained on clips of 25 frames\), found 26"),
    (dict(mode="full_sequence", frames=4), torch.zeros(1, 2, 4, 8, 8), "full_sequence mode cannot extend a video"),
    (dict(frames=4), torch.zeros(1, 2, 4, 4, 4), "prefix latents are 4x4 but the conditioning is 8x8"),
    (dict(frames=4, window=5, mode="progressive"), None, r"use window 4 or 6"),
    (dict(frames=4, mode="replacement_with_noise", context_sigma=0.2), None,
     "context noise is for progressive only"),
])
def test_impossible_runs_are_refused_before_any_model_call(model, settings, prefix, message):
    counting = CountingModel(model)
    with pytest.raises(ValueError, match=message):
        pipeline.prepare_run(counting, keyframes(model), pipeline.SamplingSettings(**{**dict(
            window=4, chunk=2, steps=4), **settings}), prefix)
    assert counting.calls == 0


def test_keyframes_past_the_end_and_sizes_are_refused(model):
    late = [(0, keyframes(model)[0][1]), (9, keyframes(model)[0][1])]
    with pytest.raises(ValueError, match=r"keyframe_starts: expected starts within.*found \[9\] past the end"):
        pipeline.prepare_run(model, late, SMALL)
    multiple = model.size_multiple
    with pytest.raises(ValueError, match=rf"width: expected a multiple of {multiple}.*found {multiple + 1}"):
        pipeline.check_size(model, multiple + 1, multiple)
    assert pipeline.size_problem(64, 128) is None
    assert "at least 128 px" in pipeline.size_problem(64, 128, 64, 128, extended=True)


# ----------------------------------------------------------------------------------- auto


def test_auto_runs_progressive_weights_as_trained_and_others_training_free(model):
    from longvid_core.trained_for import TrainedFor

    settings = pipeline.SamplingSettings(7, window=4, chunk=2, steps=4, cfg=1.0, min_cfg=1.0)
    assert settings.mode == pipeline.AUTO
    chosen, why = pipeline.resolve_auto(model, settings)  # tiny_svd: no record, like svd_xt.safetensors
    assert chosen == pipeline.training_free(settings, pipeline.TRAINING_FREE) and "no progressive" in why
    pipeline.check_settings(chosen)  # a layout the samplers take
    model.trained_for = TrainedFor(progressive=True, clip_frames=10, window=8, chunk=2, steps=16)
    try:
        run = pipeline.prepare_run(model, keyframes(model), settings)
    finally:
        model.trained_for = None
    assert (run.settings.mode, run.settings.window, run.settings.steps, run.settings.partitions) == (
        "progressive", 8, 16, 1)
    assert run.chosen == "auto -> progressive: window 8, chunk 2, 16 steps (the model was fine-tuned progressively)"
    assert pipeline.resolve_auto(model, pipeline.replace(settings, mode="context_windows"))[0].mode == "context_windows"


def test_training_free_options_grow_the_window_and_split_it():
    base = pipeline.SamplingSettings(240, "progressive", window=24, chunk=2, steps=24)
    split = pipeline.training_free(base, "partitioned_lookahead")
    assert (split.window, split.steps, split.partitions, split.lookahead) == (48, 24, 4, True)
    assert pipeline.training_free(base, "partitioned").partitions == 2
    assert pipeline.training_free(pipeline.replace(base, window=2, steps=2), "partitioned_lookahead").partitions == 2
    assert pipeline.training_free(base, "context_windows").mode == "context_windows"


@pytest.mark.parametrize("name", list(pipeline.TRAINING_FREE_OPTIONS))
def test_training_free_settings_run_through_the_pipeline_as_planned(model, name):
    counting = CountingModel(model)
    base = pipeline.SamplingSettings(9, "progressive", window=4, chunk=2, steps=4, cfg=1.5, min_cfg=1.0)
    settings = pipeline.training_free(base, name)
    run = pipeline.prepare_run(counting, keyframes(model), settings)
    latents = run.into(pipeline.LatentSink())
    assert latents.shape == (1, 9, 4, 8, 8) and torch.isfinite(latents).all()
    assert counting.calls == run.plan.denoiser_calls


def test_context_windows_cannot_extend_a_video(model):
    with pytest.raises(ValueError, match="context_windows mode cannot extend a video"):
        pipeline.prepare_run(model, keyframes(model), pipeline.SamplingSettings(4, "context_windows", 4, 2, 4),
                             torch.zeros(1, 2, 4, 8, 8))

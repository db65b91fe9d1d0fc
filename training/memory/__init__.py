"""Memory of a training step: measured on the full-size SVD-XT UNet on the CPU, predicted for a GPU.

    python -m training.memory --full-size     # measure (16 min on 2 cores, 10.3 GiB RAM), write the fit
    python -m training.memory                 # the same at the tiny test config (seconds)
    python training/train.py --estimate-memory --mode exvideo --frames 128 ...   # predict only

The UNet is built in the released layout (tensor names and shapes of ``svd_xt.safetensors``, read
from ``tests/data/svd_xt_keys_shapes.txt``) with random weights, extended by ExVideo or given LoRA
adapters like the trainer does, and trained for real steps (EDM preconditioning + UNet, x0 loss,
backward, AdamW) at small latents. What is measured and how:

- weights: bytes of every parameter's storage as built (frozen in bf16, trained in fp32, as
  ``training/model_setup.py`` keeps them);
- gradients and optimizer states: bytes of the real ``.grad`` tensors and ``optimizer.state`` of a
  subset of the trained parameters (all of them where that fits this machine); the rest of the
  gradients are dropped as soon as autograd produces them and counted at fp32 size at that moment;
- activations: the peak of live tensor bytes during forward + backward, read from torch's CPU
  allocator events (``torch.profiler`` with ``profile_memory``: every allocation and free), without
  the gradients and the autocast low-precision copies of fp32 trained weights (both computed from
  parameter counts and added back in the prediction). This is what ``torch.cuda.max_memory_allocated``
  counts on a GPU, without the allocator's slack.

The prediction adds all gradients to the activation peak, although the peak comes early in the
backward pass when few gradients exist yet: an upper bound. Each step also records the measured
peak with the gradients counted as they arrive, so the bound's slack is shown.

The activation term of each phase (forward, backward) is fitted per trained set and checkpointing
setting as ``a + b * latent pixels x frames x batch + c * latent pixels x batch`` (exactly through
three sizes that vary frames and pixels; see :func:`fit_activations`); everything else is computed
from parameter counts at the byte sizes measured. Every printed figure says which it is.

One file a job: ``plans.py`` (sizes, plans and the UNet a plan builds), ``measuring.py`` (a real
step's bytes, and the measurement run), ``estimating.py`` (the fit and the prediction
``train.py --estimate-memory`` prints; no torch), ``report.py`` (the command and the table in
docs/training.md). Nothing here imports torch before a measurement starts.
"""

from .estimating import (PHASES, Line, Prediction, Setting, activation_term, estimate_report, fit_activations,
                         fit_line, format_prediction, load_coefficients, other_components, parameter_counts,
                         predict, setting_from_config, trained_parameters, variants)
from .measuring import (StepMeasurement, coefficients_from, describe_step, lora_backend, mark_phase,
                        measure_step, peak_live_bytes, run_measurements, steps_from, tensor_bytes,
                        training_step_inputs)
from .plans import (COEFFICIENTS, CUDA_CONTEXT_BYTES, EIGHT_BIT_STATE_BYTES, FIT_MARGIN, GIB, KEYS_SHAPES,
                    LORA_RANK, LORA_TARGETS, PARAMETER_SETS, PRECISION_BYTES, REPO, Plan, Size, add_lora,
                    build_unet, check_released_layout, full_size_config, full_size_plan, lora_parameter_count,
                    released_shapes, tiny_plan)
from .report import (DOC_MODES, DOC_SETTINGS, fit_table, main)

__all__ = [
    "COEFFICIENTS", "CUDA_CONTEXT_BYTES", "DOC_MODES", "DOC_SETTINGS", "EIGHT_BIT_STATE_BYTES", "FIT_MARGIN",
    "GIB", "KEYS_SHAPES", "LORA_RANK", "LORA_TARGETS", "Line", "PARAMETER_SETS", "PHASES", "PRECISION_BYTES",
    "Plan", "Prediction", "REPO", "Setting", "Size", "StepMeasurement", "activation_term", "add_lora",
    "build_unet", "check_released_layout", "coefficients_from", "describe_step", "estimate_report",
    "fit_activations", "fit_line", "fit_table", "format_prediction", "full_size_config", "full_size_plan",
    "load_coefficients", "lora_backend", "lora_parameter_count", "main", "mark_phase", "measure_step",
    "other_components", "parameter_counts", "peak_live_bytes", "predict", "released_shapes", "run_measurements",
    "setting_from_config", "steps_from", "tensor_bytes", "tiny_plan", "trained_parameters",
    "training_step_inputs", "variants",
]

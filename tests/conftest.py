"""Test-wide settings."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_cpu_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP's
    # spinning threads make each new tensor shape take seconds instead of milliseconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def context_sigmas_seen(monkeypatch):
    """The ``context_sigma`` of every progressive sampler run started during the test, in order
    (the real sampler still runs)."""
    from longvid_core import sampling

    seen = []
    real = sampling.iter_progressive

    def recording(*args, **kwargs):
        seen.append(kwargs["context_sigma"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "iter_progressive", recording)
    return seen

"""Where a task's models run: the GPU addresses Spark assigns a task -> a torch device, and one loaded
runner per process and device."""

from __future__ import annotations

import pytest

from models import runner as runner_module
from models.base import ModelError
from models.runner import Placement, RunOptions, cuda_ordinal, get_runner, place


def test_an_assigned_address_is_the_torch_ordinal_when_cuda_visible_devices_is_unset():
    assert cuda_ordinal("3") == 3 and cuda_ordinal("0", visible="") == 0


def test_an_assigned_address_listed_in_cuda_visible_devices_maps_to_its_position():
    assert cuda_ordinal("5", visible="4,5") == 1
    assert cuda_ordinal("GPU-b7", visible="GPU-a1, GPU-b7") == 1
    assert cuda_ordinal("2", visible="4,5") == 2  # not narrowed by the list: Spark's index as it is


def test_an_address_that_is_no_index_and_not_listed_is_an_error_naming_it():
    with pytest.raises(ModelError, match="'GPU-zz'"):
        cuda_ordinal("GPU-zz", visible="GPU-a1")


def test_a_task_given_a_gpu_runs_on_that_gpu_when_cuda_is_there():
    assert place("auto", ["1"], cuda=True, visible="") == Placement("cuda:1", ("1",), "")
    assert place("cuda", ("0",), cuda=True, visible="") == Placement("cuda:0", ("0",), "")
    assert place("auto", ["3"], cuda=True, visible="2,3") == Placement("cuda:1", ("3",), "")


def test_a_task_given_two_gpus_runs_on_the_first_and_says_so():
    placement = place("auto", ["1", "0"], cuda=True, visible="")
    assert placement.device == "cuda:1" and placement.assigned == ("1", "0")
    assert placement.note == "Spark assigned GPUs 1, 0: models on the first"


def test_a_task_given_a_gpu_on_a_machine_without_cuda_falls_back_to_the_cpu_and_says_so():
    placement = place("auto", ["1"], cuda=False)
    assert placement == Placement("cpu", ("1",), "Spark assigned GPU 1 but torch sees no CUDA GPU: scored on the CPU")
    assert place("cuda", ["0"], cuda=False).device == "cpu"


def test_an_explicit_cpu_device_is_kept_and_the_unused_gpu_noted():
    assert place("cpu", ["0"], cuda=True) == Placement("cpu", ("0",), "device = cpu set: Spark's GPU 0 not used")


def test_without_assigned_gpus_the_device_resolves_as_configured():
    assert place("cpu") == Placement("cpu")
    assert place("auto", ()).device in ("cpu", "cuda")  # torch's view of this machine


class _Loaded:
    def __init__(self, cfg, options, storage=None):
        self.device = options.device

    def load(self):
        return self


def test_get_runner_keeps_one_runner_per_device(monkeypatch):
    monkeypatch.setattr(runner_module, "_RUNNERS", {})
    monkeypatch.setattr(runner_module, "AnnotationRunner", _Loaded)
    monkeypatch.setattr(runner_module, "resolve_device", lambda d: "cuda:0" if d in ("auto", "cuda") else d)
    cfg = object()
    first = get_runner(cfg, RunOptions(device="cuda:0"))
    assert get_runner(cfg, RunOptions(device="auto")) is first  # auto stands for cuda:0 here: no second load
    second = get_runner(cfg, RunOptions(device="cuda:1"))
    assert second is not first and second.device == "cuda:1"
    assert get_runner(cfg, RunOptions(device="cuda:1")) is second
    assert len(runner_module._RUNNERS) == 2

"""The Task registry agrees with the presets, the methods, the options and the problems built."""

from dataclasses import fields

import numpy as np
import pytest

from deeprestore.arrays import Image
from deeprestore.config.presets import load_preset
from deeprestore.methods import METHODS
from deeprestore.metrics import PROTOCOLS
from deeprestore.tasks.options import TaskOptions
from deeprestore.tasks.problem import build_problem
from deeprestore.tasks.registry import DENOISE, TASKS, Task, TaskError, check_factor

#: options that make each task's problem on a 32×32 grey image
OPTIONS = {"denoise": {"sigma": 10.0}, "deblur": {}, "superres": {"factor": 2},
           "inpaint": {"mask": np.eye(32)}}


@pytest.mark.parametrize("task", TASKS.values(), ids=list(TASKS))
def test_each_task_is_consistent(task: Task) -> None:
    presets = [task.preset, *(preset for _, _, preset in task.preset_variants)]
    assert all(load_preset(name).task == task.name for name in presets)
    assert set(task.methods) <= set(METHODS)
    assert set(task.options) <= {f.name for f in fields(TaskOptions)}
    assert task.protocol in PROTOCOLS
    assert task.help.endswith(".") and "\n" not in task.help


@pytest.mark.parametrize("name", list(TASKS))
def test_the_problem_has_the_tasks_baselines_and_protocol(name: str) -> None:
    made = build_problem(TaskOptions(name, **OPTIONS[name]), Image(np.full((32, 32, 1), 0.5)),
                         None)
    task = TASKS[name]
    assert made.protocol == task.protocol
    # denoising's baselines are denoisers the engine runs itself, not functions of the problem
    assert set(made.baselines) == (set() if task is DENOISE else set(task.baselines))
    assert made.info["task"] == name and set(task.options) <= set(made.info)


def test_every_method_is_offered_by_some_task() -> None:
    offered = {method for task in TASKS.values() for method in task.methods}
    assert offered == set(METHODS)


@pytest.mark.parametrize("given", [4, np.int64(4), 4.0])
def test_a_whole_number_factor_is_the_factor(given: object) -> None:
    assert check_factor(given) == 4 and type(check_factor(given)) is int  # type: ignore[arg-type]


@pytest.mark.parametrize("given", [3, 4.5, 16.0, None, "4"])
def test_any_other_factor_is_a_task_error(given: object) -> None:
    with pytest.raises(TaskError, match=r"^factor must be 2, 4 or 8 \(got "):
        check_factor(given)  # type: ignore[arg-type]

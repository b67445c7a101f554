"""--device: cpu, cuda, cuda:N or auto, checked up front in one line on every command that has it
(CUDA faked where the test needs it: this machine may have none)."""

from __future__ import annotations

import pytest
import torch

from sparsekits.cli import build_parser, main
from sparsekits.device import check_device
from sparsekits.errors import InputError
from sparsekits.train.distributed import init_distributed


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_picks_cuda_when_present_else_the_cpu(monkeypatch, two_gpus):
    assert check_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("auto") == "cpu"


def test_a_cuda_device_by_number(two_gpus):
    assert check_device("cuda:1") == "cuda:1"
    assert check_device("cpu") == "cpu"
    with pytest.raises(InputError, match="--device cuda:2: no such CUDA device: this machine has "
                       "cuda:0 to cuda:1"):  # fmt: skip
        check_device("cuda:2")


@pytest.mark.parametrize(
    "name, problem",
    [
        ("gpu", "not a device (cpu, cuda, cuda:N or auto"),
        ("cuda:x", "not a device"),
        ("meta", "unsupported device type"),
        ("cuda", "no CUDA device on this machine; use --device cpu or auto"),
    ],
)
def test_other_names_and_missing_cuda_are_refused(no_gpu, name, problem):
    with pytest.raises(InputError, match=problem.replace("(", r"\(")) as refused:
        check_device(name)
    assert str(refused.value).startswith(f"--device {name}: ")


def test_training_alone_runs_on_the_numbered_gpu(two_gpus, monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)

    assert init_distributed("cuda:1").device == torch.device("cuda", 1)
    assert init_distributed("auto").device == torch.device("cuda", 0)
    assert chosen == [torch.device("cuda", 1), torch.device("cuda", 0)]


# Every command that has --device, with its other required arguments.
COMMANDS = {
    "train": ["train", "--data", "d", "--stage", "roi", "--out", "o"],
    "predict": ["predict", "-i", "i", "-o", "o", "--model", "m"],
    "compare": ["compare"],
    "benchmark": ["benchmark", "--input", "i"],
}


def test_every_command_with_a_device_option_is_covered():
    parser = build_parser()
    (sub,) = [
        action for action in parser._actions if action.choices and "predict" in action.choices
    ]
    having = {
        name
        for name, command in sub.choices.items()
        if any("--device" in action.option_strings for action in command._actions)
    }
    assert having == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_auto_and_refuses_a_bad_device_up_front(command, no_gpu, capsys):
    args = COMMANDS[command]
    assert build_parser().parse_args([*args, "--device", "auto"]).device == "auto"

    assert main([*args, "--device", "cuda:7"]) == 2

    assert capsys.readouterr().err.splitlines() == [
        "sparsekits: error: --device cuda:7: no CUDA device on this machine; use --device cpu or "
        "auto"
    ]

"""Checkpoint folders (atomic, pruned, found again) and the optimizer/RNG state as safetensors + JSON."""

import json
import random

import numpy as np
import pytest
import torch

from opensora.errors import UserError
from training.checkpointing import (
    COMPLETE_MARKER,
    CheckpointData,
    CheckpointSaver,
    complete_checkpoints,
    latest_checkpoint,
    read_checkpoint,
    remove_incomplete,
    write_checkpoint,
)
from training.metrics import MetricsLog, read_jsonl
from training.train_state import (
    flatten_optimizer_state,
    rng_state,
    set_rng_state,
    step_seed,
    unflatten_optimizer_state,
)


def _data(step: int) -> CheckpointData:
    return CheckpointData(
        step=step,
        tensors={"lora": {"w": torch.full((2, 2), float(step))}},
        json={"trainer": {"step": step}},
        metadata={"lora": {"format": "test"}},
    )


def test_write_read_and_find_the_newest_complete(tmp_path):
    for step in (5, 10):
        write_checkpoint(tmp_path, _data(step))
    # What a crash leaves behind: a temp folder mid-write and a folder without its marker.
    (tmp_path / "step-000015.tmp-abcd").mkdir()
    (tmp_path / "step-000015.tmp-abcd" / "lora.safetensors").write_bytes(b"half")
    (tmp_path / "step-000020").mkdir()
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [5, 10]
    assert latest_checkpoint(tmp_path).name == "step-000010"
    data = read_checkpoint(latest_checkpoint(tmp_path))
    assert data.step == 10 and data.json["trainer"] == {"step": 10}
    assert torch.equal(data.tensors["lora"]["w"], torch.full((2, 2), 10.0))
    removed = sorted(p.name for p in remove_incomplete(tmp_path))
    assert removed == ["step-000015.tmp-abcd", "step-000020"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000005", "step-000010"]
    with pytest.raises(UserError, match="not a complete checkpoint"):
        read_checkpoint(tmp_path / "step-000099")


def test_saving_the_same_step_again_replaces_it(tmp_path):
    write_checkpoint(tmp_path, _data(7))
    data = _data(7)
    data.tensors["lora"]["w"] += 1
    write_checkpoint(tmp_path, data)
    assert read_checkpoint(tmp_path / "step-000007").tensors["lora"]["w"][0, 0] == 8.0
    assert [p.name for p in tmp_path.iterdir()] == ["step-000007"]


def test_async_saver_keeps_the_last_k(tmp_path):
    saver = CheckpointSaver(tmp_path, keep_last=2, async_save=True)
    for step in (1, 2, 3, 4):
        saver.save(_data(step))
    saver.wait()
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [3, 4]
    assert all((p / COMPLETE_MARKER).is_file() for p in tmp_path.iterdir())


def test_failed_async_write_is_raised_by_wait(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    saver = CheckpointSaver(blocker, keep_last=2, async_save=True)
    saver.save(_data(1))
    with pytest.raises(OSError):
        saver.wait()


def test_optimizer_state_round_trip():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"state": {f"p{i}": s for i, s in enumerate(optimizer.state_dict()["state"].values())},
             "param_groups": optimizer.state_dict()["param_groups"]}
    tensors, rest = flatten_optimizer_state(state)
    rest = json.loads(json.dumps(rest))  # what the checkpoint's JSON file gives back
    again = unflatten_optimizer_state(tensors, rest)
    assert again["param_groups"][0]["betas"] == (0.8, 0.9)
    for name, values in state["state"].items():
        for key, value in values.items():
            assert torch.equal(again["state"][name][key], value)


def test_rng_states_round_trip():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    tensors, rest = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    set_rng_state(tensors, json.loads(json.dumps(rest)))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_step_seeds_depend_on_position_only():
    assert step_seed(0, 5, 0, 0) == step_seed(0, 5, 0, 0)
    assert len({step_seed(0, s, r, m) for s in range(20) for r in range(2) for m in range(2)}) == 80
    assert 0 <= step_seed(2**32 - 1, 10**7, 7, 3) < 2**63


def test_metrics_of_a_resumed_run_continue_after_its_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, resume_step=None, tensorboard=False)
    for step in range(1, 8):
        log.log_step({"step": step, "loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "lo')  # a line cut by kill -9
    MetricsLog(tmp_path, resume_step=5, tensorboard=False).log_step({"step": 6, "loss": 0.5})
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    MetricsLog(tmp_path, resume_step=None, tensorboard=False)  # a fresh run starts a new file
    assert read_jsonl(tmp_path / "metrics.jsonl") == []

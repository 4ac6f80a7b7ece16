"""The mixed-precision rule: bf16 only where the GPU has it natively, else fp16 with an active loss scaler."""
import types

import pytest
import torch

from common import distributed
from common.distributed import Runtime, amp_dtype, fp16_scaler_needed, grad_scaler, native_bf16

CUDA = Runtime(torch.device("cuda", 0))
CPU = Runtime(torch.device("cpu"))


@pytest.fixture
def gpu(monkeypatch):
    """Pretend a CUDA GPU of the given compute capability is present (set capability[0])."""
    capability = [7, 0]
    props = lambda device=None: types.SimpleNamespace(major=capability[0], minor=capability[1])
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: tuple(capability))
    # emulated bf16 "works" on a V100/T4: the plain is_bf16_supported() check says True there
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    return capability


@pytest.mark.parametrize("major,dtype", [(6, torch.float16), (7, torch.float16), (8, torch.bfloat16),
                                         (9, torch.bfloat16)])
def test_bf16_only_where_native(gpu, major, dtype):
    gpu[0] = major
    assert torch.cuda.is_bf16_supported()  # what the old rule asked: True even on 6.x/7.x here
    assert native_bf16() is (major >= 8)
    assert amp_dtype(CUDA) == dtype
    assert fp16_scaler_needed(CUDA, amp=True) is (dtype == torch.float16)
    assert grad_scaler(CUDA, amp=True).is_enabled() is (dtype == torch.float16)
    assert not fp16_scaler_needed(CUDA, amp=False)


def test_capability_fallback_for_torch_without_including_emulation(gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # the old signature
    gpu[0] = 7
    assert not native_bf16()
    gpu[0] = 8
    assert native_bf16()


def test_cpu_never_scales():
    assert not fp16_scaler_needed(CPU, amp=True)
    assert not grad_scaler(CPU, amp=True).is_enabled()
    with distributed.autocast(CPU, True):
        assert not torch.is_autocast_enabled()


def test_disabled_scaler_is_a_pass_through():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    scaler = grad_scaler(CPU, amp=True)
    loss = (w * 2).sum()
    assert scaler.scale(loss) is loss
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    torch.testing.assert_close(w.detach(), torch.tensor([0.0]))
    assert scaler.state_dict() == {}

import pytest
import torch

from deeprestore.models.batched import BatchedSkipNet
from deeprestore.models.skip import SkipNet, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny nets


def _nets(runs: int, upsample_mode: str = "bilinear", skip_channels: int = 2) -> list[SkipNet]:
    torch.manual_seed(runs)
    return [
        SkipNet(4, 3, channels=8, skip_channels=skip_channels, upsample_mode=upsample_mode)
        for _ in range(runs)
    ]


def _separate(nets: list[SkipNet], z: torch.Tensor) -> torch.Tensor:
    return torch.cat([net(z[r : r + 1]) for r, net in enumerate(nets)])


def _per_run_losses(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N,): each run's own mean squared error."""
    return ((out - target) ** 2).mean(dim=(1, 2, 3))


@pytest.mark.parametrize(
    ("runs", "size", "upsample_mode", "skip_channels"),
    [(2, (16, 16), "bilinear", 2), (3, (23, 40), "bilinear", 2), (2, (33, 17), "nearest", 0)],
)
def test_forward_and_gradients_match_separate_nets(runs, size, upsample_mode, skip_channels):
    nets = _nets(runs, upsample_mode, skip_channels)
    batched = BatchedSkipNet.from_nets(nets)
    z = torch.randn(runs, 4, *size, generator=torch.Generator().manual_seed(1))
    target = torch.rand(runs, 3, *size, generator=torch.Generator().manual_seed(2))

    out = batched(z)
    expected = _separate(nets, z)
    assert out.shape == (runs, 3, *size)
    # Grouped and separate convolutions sum in different orders, and oneDNN picks its kernels per
    # CPU: up to 1.0e-5 apart on one host here (outputs in (0, 1)); runs in the wrong order: 0.65.
    torch.testing.assert_close(out, expected, atol=5e-5, rtol=0)

    _per_run_losses(out, target).sum().backward()
    for r, net in enumerate(nets):
        _per_run_losses(net(z[r : r + 1]), target[r : r + 1]).sum().backward()
    # every batched parameter is the run-major dim-0 concatenation of the nets' parameters
    named = dict(batched.named_parameters())
    for name, _ in nets[0].named_parameters():
        expected_grad = torch.cat([dict(net.named_parameters())[name].grad for net in nets])
        assert named[name].grad is not None, name
        torch.testing.assert_close(named[name].grad, expected_grad, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("runs", [2, 3])
def test_one_adam_step_equals_separate_adam_steps(runs):
    nets = _nets(runs)
    batched = BatchedSkipNet.from_nets(nets)
    z = torch.randn(runs, 4, 20, 28, generator=torch.Generator().manual_seed(3))
    target = torch.rand(runs, 3, 20, 28, generator=torch.Generator().manual_seed(4))
    lr = 1e-2

    optimizer = torch.optim.Adam(batched.parameters(), lr=lr)
    optimizer.zero_grad(set_to_none=True)
    _per_run_losses(batched(z), target).sum().backward()
    grads = {name: p.grad.clone() for name, p in batched.named_parameters()}
    optimizer.step()
    stepped = _nets(runs)
    batched.copy_into(stepped)

    for r, net in enumerate(nets):
        # (1) end to end: each net's own loss, backward and Adam step. Some true gradients are 0
        # at init (conv biases before a BatchNorm, BN scales feeding another BN): those elements
        # get rounding noise as gradient (up to ~4e-5 on one host here, ~1e-8 on another: oneDNN's
        # kernels differ per CPU), which Adam's first step turns into ±lr of arbitrary sign,
        # separately and batched alike. Compare the elements with a real gradient.
        own = [p.detach().clone() for p in net.parameters()]
        single = torch.optim.Adam(net.parameters(), lr=lr)
        _per_run_losses(net(z[r : r + 1]), target[r : r + 1]).sum().backward()
        single.step()
        compared = 0
        for (name, p), q in zip(net.named_parameters(), stepped[r].parameters(), strict=True):
            real = p.grad.abs() > 1e-4
            compared += int(real.sum())
            torch.testing.assert_close(q[real], p[real], atol=1e-6, rtol=0, msg=f"{r} {name}")
            assert torch.all((q - p).abs() <= 2.01 * lr)
        assert compared > 0.85 * sum(p.numel() for p in net.parameters())
        # (2) Adam is elementwise: the batched gradient's run-r slice gives run r's exact step
        with torch.no_grad():
            for p, start in zip(net.parameters(), own, strict=True):
                p.copy_(start)
        single = torch.optim.Adam(net.parameters(), lr=lr)
        for name, p in net.named_parameters():
            p.grad = grads[name].chunk(runs)[r].clone()
        single.step()
        for (name, p), q in zip(net.named_parameters(), stepped[r].parameters(), strict=True):
            torch.testing.assert_close(q, p, atol=1e-7, rtol=0, msg=f"run {r} {name}")


def _equal_states(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_copies_into_and_from_nets_round_trip_parameters_and_buffers():
    nets = _nets(3)
    with torch.no_grad():
        for net in nets:  # give the BatchNorm running stats distinct values
            net(torch.rand(1, 4, 16, 16))
    batched = BatchedSkipNet.from_nets(nets)
    back = [SkipNet(4, 3, channels=8, skip_channels=2) for _ in nets]
    batched.copy_into(back)
    for net, copy in zip(nets, back, strict=True):
        _equal_states(net, copy)
    # a share of the runs, from run 1 on: runs 1 and 2 become nets 0 and 1, run 0 stays
    batched.copy_from(nets[:2], first=1)
    share = [SkipNet(4, 3, channels=8, skip_channels=2) for _ in range(3)]
    batched.copy_into(share)
    _equal_states(nets[0], share[0])
    _equal_states(nets[0], share[1])
    _equal_states(nets[1], share[2])


def test_parameter_count_is_runs_times_a_skipnet():
    assert count_parameters(BatchedSkipNet(3, 32, 3)) == 3 * count_parameters(SkipNet(32, 3))
    small = BatchedSkipNet(2, 4, 1, channels=8, skip_channels=2, scales=3)
    assert count_parameters(small) == 2 * count_parameters(
        SkipNet(4, 1, channels=8, skip_channels=2, scales=3)
    )


def test_fresh_runs_are_independent_and_inputs_are_checked():
    batched = BatchedSkipNet(2, 4, 3, channels=8, skip_channels=2)
    z = torch.rand(2, 4, 16, 16)
    out = batched(z)
    assert out.shape == (2, 3, 16, 16) and torch.all((out > 0) & (out < 1))
    # changing run 1's input leaves run 0's output alone
    z2 = z.clone()
    z2[1] += 1.0
    torch.testing.assert_close(batched(z2)[0], out[0])
    with pytest.raises(ValueError, match="expected z"):
        batched(torch.rand(3, 4, 16, 16))

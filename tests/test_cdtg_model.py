"""CDTG.model: the class-conditional SWAGAN with tiny widths."""
import pytest
import torch
import torch.nn.functional as F

from CDTG import original
from CDTG.model import Discriminator, Generator
from CDTG.sampling import image_draws
from common.errors import UserError

STYLE_DIM, NUM_CLASSES, WIDTH = 32, 5, 16


def tiny_generator(size=32):
    return Generator(size, STYLE_DIM, n_mlp=2, num_classes=NUM_CLASSES, max_channels=WIDTH)


def tiny_discriminator(size=32):
    return Discriminator(size, num_classes=NUM_CLASSES, label_dim=8, max_channels=WIDTH)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_generator_output_shape_and_range(size):
    g = tiny_generator(size)
    assert g.n_latent == 2 * g.log_size - 2 and g.num_layers == 2 * g.log_size - 3
    image, latents = g([torch.randn(4, STYLE_DIM)], torch.tensor([0, 1, 2, 4]), return_latents=True)
    assert image.shape == (4, 3, size, size)
    assert latents.shape == (4, g.n_latent, STYLE_DIM)
    assert torch.isfinite(image).all()
    assert 0.05 < image.std() < 20  # no output squashing in StyleGAN2: unbounded, but of unit order at init
    assert image.std(0).mean() > 1e-3  # samples differ


def test_label_changes_the_image_and_fixed_noise_is_deterministic():
    g = tiny_generator()
    z = torch.randn(2, STYLE_DIM)
    a, _ = g([z], torch.tensor([0, 0]), randomize_noise=False)
    a2, _ = g([z], torch.tensor([0, 0]), randomize_noise=False)
    b, _ = g([z], torch.tensor([3, 3]), randomize_noise=False)
    torch.testing.assert_close(a, a2)
    assert (a - b).abs().mean() > 1e-3
    with pytest.raises(ValueError):
        g([z])


def test_label_embedding_is_added_before_the_mapping():
    g = tiny_generator()
    z, y = torch.randn(3, STYLE_DIM), torch.tensor([1, 2, 3])
    torch.testing.assert_close(g.get_latent(z, y), g.style(z + g.label_emb.weight[y]))
    w = g.get_latent(z, y)
    via_z, _ = g([z], y, randomize_noise=False)
    via_w, _ = g([w], input_is_latent=True, randomize_noise=False)
    torch.testing.assert_close(via_z, via_w)


def test_style_mixing_with_two_latents():
    g = tiny_generator()
    z1, z2, y = torch.randn(2, STYLE_DIM), torch.randn(2, STYLE_DIM), torch.tensor([1, 1])
    w1, w2 = g.get_latent(z1, y), g.get_latent(z2, y)
    _, latents = g([z1, z2], y, inject_index=3, return_latents=True)
    torch.testing.assert_close(latents[:, :3], w1[:, None].expand(-1, 3, -1))
    torch.testing.assert_close(latents[:, 3:], w2[:, None].expand(-1, g.n_latent - 3, -1))
    for _ in range(5):  # random crossover: both latents always present
        _, latents = g([z1, z2], y, return_latents=True)
        torch.testing.assert_close(latents[:, 0], w1)
        torch.testing.assert_close(latents[:, -1], w2)
    mixed, _ = g([z1, z2], y, inject_index=3, randomize_noise=False)
    pure, _ = g([z1], y, randomize_noise=False)
    assert mixed.shape == (2, 3, 32, 32) and (mixed - pure).abs().mean() > 1e-4


def test_truncation_towards_mean_latent():
    g = tiny_generator()
    mean = g.mean_latent(64)
    assert mean.shape == (1, STYLE_DIM)
    assert g.mean_latent(8, labels=2).shape == (1, STYLE_DIM)
    y = torch.tensor([2, 2, 2])
    images, _ = g([torch.randn(3, STYLE_DIM)], y, truncation=0.0, truncation_latent=mean,
                  randomize_noise=False)
    torch.testing.assert_close(images[0], images[1])  # all collapse to the mean latent
    noises = image_draws(g, 0.0, "always", 0, 2, range(3))[2]  # one noise image per synthesis layer and image
    assert [tuple(n.shape) for n in noises] == [(3, 1, r, r) for r in (4, 8, 8, 16, 16)]
    z = torch.randn(3, STYLE_DIM)
    fixed, _ = g([z], y, noise=noises)
    again, _ = g([z], y, noise=noises)
    assert fixed.shape == (3, 3, 32, 32)
    torch.testing.assert_close(fixed, again)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_discriminator_output_depends_on_label(size):
    d = tiny_discriminator(size)
    x = torch.randn(4, 3, size, size)
    out_a = d(x, torch.tensor([0, 1, 2, 3]))
    out_b = d(x, torch.tensor([4, 4, 4, 4]))
    assert out_a.shape == (4, 1)
    assert (out_a - out_b).abs().max() > 1e-4


def test_bad_size_is_a_user_error():
    with pytest.raises(UserError, match="power of two"):
        Generator(48, num_classes=2, max_channels=8)
    with pytest.raises(UserError, match="power of two"):
        Discriminator(8, num_classes=2, max_channels=8)


def assert_every_parameter_has_gradient(model):
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_adversarial_losses_reach_every_parameter():
    g, d = tiny_generator(), tiny_discriminator()
    y = torch.tensor([0, 1, 2, 3])
    fake, _ = g([torch.randn(4, STYLE_DIM), torch.randn(4, STYLE_DIM)], y)
    F.softplus(-d(fake, y)).mean().backward()
    assert_every_parameter_has_gradient(g)
    d.zero_grad()
    real = torch.randn(4, 3, 32, 32)
    (F.softplus(-d(real, y)) + F.softplus(d(fake.detach(), y))).mean().backward()
    assert_every_parameter_has_gradient(d)


def test_r1_and_path_length_regularisers_backpropagate():
    g, d = tiny_generator(), tiny_discriminator()
    y = torch.tensor([0, 1, 2, 3])
    real = torch.randn(4, 3, 32, 32, requires_grad=True)
    grad_real, = torch.autograd.grad(d(real, y).sum(), real, create_graph=True)
    r1 = grad_real.pow(2).flatten(1).sum(1).mean()
    r1.backward()
    for name in ("from_rgbs.0.conv.0.weight", "convs.0.conv1.0.weight", "final_linear.0.weight"):
        grad = d.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name

    image, latents = g([torch.randn(4, STYLE_DIM)], y, return_latents=True)
    noise = torch.randn_like(image) / (image.shape[2] * image.shape[3]) ** 0.5
    grad_w, = torch.autograd.grad((image * noise).sum(), latents, create_graph=True)
    lengths = grad_w.pow(2).sum(2).mean(1).sqrt()
    (lengths - lengths.detach().mean() * 0.9).pow(2).mean().backward()
    for name in ("style.1.weight", "label_emb.weight", "conv1.conv.weight", "to_rgbs.0.conv.weight"):
        grad = g.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


CONDITIONAL_ONLY = ("label_emb.", "fusion_conv.")


def test_load_unconditional_swagan_checkpoint(capsys):
    source_g, source_d, source_ema = tiny_generator(), tiny_discriminator(), tiny_generator()

    def unconditional(model):
        return {k: v for k, v in model.state_dict().items() if not k.startswith(CONDITIONAL_ONLY)}

    ck = {"g": unconditional(source_g), "d": unconditional(source_d), "g_ema": unconditional(source_ema),
          "args": None}
    g, d, g_ema = tiny_generator(), tiny_discriminator(), tiny_generator()
    init_emb = g.label_emb.weight.detach().clone()
    layout, left = original.load_into(ck, "swagan.pt", {"g": g, "d": d, "g_ema": g_ema})

    assert layout.name == "satconcepts" and not layout.conditional
    for key, source, target in (("g", source_g, g), ("d", source_d, d), ("g_ema", source_ema, g_ema)):
        for name, tensor in unconditional(source).items():
            torch.testing.assert_close(target.state_dict()[name], tensor)
    assert left == ["g.label_emb.weight", "d.label_emb.weight", "d.fusion_conv.0.weight",
                    "d.fusion_conv.1.bias", "g_ema.label_emb.weight"]
    torch.testing.assert_close(g.label_emb.weight, init_emb)
    assert capsys.readouterr().out == ("recognised swagan.pt as an unconditional SWAGAN in SatConcepts' "
                                       "layout (1x1 FromRGB): every tensor of g, d, g_ema loaded\n")


def test_load_swagan_checkpoint_rejects_foreign_files():
    g, d = tiny_generator(), tiny_discriminator()
    complete = {"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict()}
    with pytest.raises(UserError, match="no_ema.pt is none of the known GAN checkpoint layouts;.*g_ema,"):
        original.load_into({"g": g.state_dict(), "d": d.state_dict()}, "no_ema.pt", {"g_ema": g})
    with pytest.raises(UserError, match=r"foreign.pt: g.fc.weight has no place in this repository's model"):
        original.load_into({**complete, "g": {**complete["g"], "fc.weight": torch.zeros(3)}}, "foreign.pt",
                           {"g": tiny_generator()})
    layout, left = original.load_into(complete, "ema.pt", {"g_ema": tiny_generator()})
    assert layout.name == "tgn" and left == []

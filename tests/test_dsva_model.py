"""DSVA's network, losses and metrics on tiny models and hand-made numbers."""
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from common.clip import quiet_open_clip, register_model_config
from DSVA.evaluate import (
    calibrated_stacking,
    gzsl_predict,
    harmonic_mean,
    per_class_mean_accuracy,
    zsl_gzsl,
    zsl_predict,
)
from DSVA.losses import LossWeights, attention_concentration, class_ce, dsva_loss, group_lasso
from DSVA.model import (
    DSVA,
    TokenEncoder,
    build_visual,
    describe_visual,
    largest_component_box,
    proposal_crops,
)

NAME = "dsva-test-vit"
CFG = {"embed_dim": 16,
       "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
       "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def visual():
    torch.manual_seed(0)
    register_model_config(NAME, CFG)
    with quiet_open_clip():
        return open_clip.create_model(NAME).visual.eval()


def test_tokens_are_the_last_block_output_without_ln_post(visual):
    x = torch.randn(2, 3, 32, 32)
    tokens = TokenEncoder(visual)(x)
    assert tokens.shape == (2, 1 + 4 * 4, 32)
    with torch.no_grad():
        want = visual.transformer(visual._embeds(x))
    assert torch.allclose(tokens, want, atol=1e-5)
    with_ln = TokenEncoder(visual, ln_post=True)(x)
    assert torch.allclose(with_ln, visual.ln_post(want), atol=1e-5)


def test_dsva_shapes_and_local_branch_by_hand(visual):
    torch.manual_seed(1)
    model = DSVA(visual, num_attributes=5, groups={"a": [0, 1], "b": [2, 3, 4]}).eval()
    att = torch.rand(5, 3)  # attributes x classes
    x = torch.randn(2, 3, 32, 32)
    out = model(x, att)
    assert out["attention"].shape == (2, 5, 4, 4)
    assert out["global"].shape == out["local"].shape == (2, 3)
    tokens = model.encoder(x)
    m = torch.einsum("kd,bnd->bkn", model.prototypes, tokens)
    assert torch.allclose(out["local_attr"], m.max(2).values, atol=1e-6)
    assert torch.allclose(out["attention"][1, 2].flatten(), m[1, 2, 1:], atol=1e-6)
    assert torch.allclose(out["global_attr"], model.ale(model.norm(tokens.mean(1))), atol=1e-6)
    assert torch.allclose(out["local"], out["local_attr"] @ att, atol=1e-6)
    assert {id(p) for p in model.head_parameters()} == {id(model.prototypes), id(model.ale.weight),
                                                        id(model.ale.bias)}
    with_proposal = model(x, att, proposal=True)
    assert with_proposal["proposal"].shape == (2, 3)
    assert torch.allclose(with_proposal["global"], out["global"] + with_proposal["proposal"], atol=1e-5)


def test_rebuilt_tower_loads_the_weights(visual):
    desc = describe_visual(NAME, visual)
    assert desc["clip_cfg"] == CFG and desc["quick_gelu"] is False
    again = build_visual(desc["clip_model"], desc["clip_cfg"], desc["quick_gelu"])
    again.load_state_dict(visual.state_dict())


def test_largest_component_and_proposal_crop():
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = True  # small region
    mask[2:5, 3:6] = True  # large region
    mask[5, 2] = True  # touches the large region diagonally: 8-connected, as skimage's label
    assert largest_component_box(mask) == (2, 2, 6, 6)
    assert largest_component_box(np.zeros((3, 3), dtype=bool)) is None
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    attention = torch.zeros(2, 2, 2, 2)
    attention[:, :, 0, 0] = 1.0  # the top-left cell only
    crops = proposal_crops(images, attention, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), [[0], [1]], 1.0)
    assert crops.shape == images.shape
    assert not torch.equal(crops, images)  # a crop of the top-left corner, resized back


def test_double_softmax_and_logits_ce_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    y = torch.tensor([0])
    p = [math.exp(2) / (math.exp(2) + 2), 1 / (math.exp(2) + 2), 1 / (math.exp(2) + 2)]
    double = -math.log(math.exp(p[0]) / sum(math.exp(v) for v in p))
    assert class_ce(logits, y, double_softmax=True).item() == pytest.approx(double, rel=1e-5)
    assert class_ce(logits, y, double_softmax=False).item() == pytest.approx(-math.log(p[0]), rel=1e-5)
    # however confident the logits, the double softmax cannot go below ln(1 + (C - 1) / e): a weak signal
    floor = math.log(1 + 2 / math.e)
    assert class_ce(torch.tensor([[50.0, 0.0, 0.0]]), y).item() == pytest.approx(floor, rel=1e-5)


def test_attention_concentration_by_hand():
    m = torch.zeros(1, 1, 3, 3)
    m[0, 0, 0, 0] = 2.0  # the peak at (0, 0)
    dist = torch.tensor([[0, 1, 4], [1, 2, 5], [4, 5, 8]], dtype=torch.float32)
    want = (torch.sigmoid(m[0, 0]) * dist).sum()
    assert attention_concentration(m).item() == pytest.approx(want.item(), rel=1e-6)
    # sigmoid(0) = 0.5 elsewhere
    assert attention_concentration(m).item() == pytest.approx(0.5 * 30, rel=1e-6)


def test_group_lasso_by_hand():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    assert group_lasso(w, [[0, 1], [2]]).item() == pytest.approx(math.sqrt(25 + 2e-8) + math.sqrt(1 + 2e-8))


def test_dsva_loss_terms(visual):
    torch.manual_seed(2)
    model = DSVA(visual, 4, {"a": [0, 1], "b": [2, 3]})
    att = torch.rand(4, 3)
    out = model(torch.randn(3, 3, 32, 32), att)
    y = torch.tensor([0, 2, 1])
    w = LossWeights(regular=1e-3, l_regular=1e-2)
    _, before = dsva_loss(out, y, att.T[y], model, w, concentrate=False)
    total, after = dsva_loss(out, y, att.T[y], model, w, concentrate=True)
    assert "cpt" not in before and "cpt" in after
    assert set(after) == {"xe", "attri", "l_xe", "l_attri", "cpt", "regular", "l_regular"}
    assert total.item() == pytest.approx(sum(v.item() for v in after.values()), rel=1e-5)
    want = 1e-2 * F.mse_loss(out["global_attr"], att.T[y]).item()
    assert after["attri"].item() == pytest.approx(want, rel=1e-5)
    total.backward()
    assert model.prototypes.grad is not None


def test_per_class_mean_accuracy_and_harmonic_mean():
    y = [0, 0, 0, 1, 2]
    p = [0, 1, 1, 1, 0]
    assert per_class_mean_accuracy(y, p, [0, 1, 2]) == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert per_class_mean_accuracy(y, p, [0, 1, 3]) == pytest.approx((1 / 3 + 1) / 2)  # class 3 has no images
    assert harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_calibrated_stacking_by_hand():
    seen, unseen = [0, 1], [2]
    # probabilities 0.40 / 0.22 / 0.38: seen class 0 wins without calibration, unseen class 2 with gamma 0.05
    logits = torch.log(torch.tensor([[0.40, 0.22, 0.38]]))
    assert gzsl_predict(logits, seen, unseen, 0.0).tolist() == [0]
    assert gzsl_predict(logits, seen, unseen, 0.05).tolist() == [2]
    probs = torch.tensor([[0.4, 0.22, 0.38]])
    assert torch.allclose(calibrated_stacking(probs, torch.tensor([True, True, False]), 0.05),
                          torch.tensor([[0.35, 0.17, 0.38]]))
    # ZSL ignores the seen columns
    assert zsl_predict(torch.tensor([[9.0, 9.0, 1.0, 2.0]]), [2, 3]).tolist() == [3]


def test_zsl_gzsl_figures_by_hand():
    seen, unseen = [0, 1], [2, 3]
    big = 10.0
    # unseen images: class 2 right, class 3 predicted as seen class 0 in GZSL but right among the unseen
    u_logits = torch.tensor([[0, 0, big, 0], [big, 0, 0, big - 0.1]])
    s_logits = torch.tensor([[big, 0, 0, 0], [0, 0, big, 0]])  # seen class 0 right, class 1 wrong
    f = zsl_gzsl(u_logits, np.array([2, 3]), s_logits, np.array([0, 1]), seen, unseen, gamma=0.0)
    assert f["zsl"] == pytest.approx(1.0)
    assert f["u"] == pytest.approx(0.5) and f["s"] == pytest.approx(0.5)
    assert f["h"] == pytest.approx(0.5)
    # a gamma larger than the seen class's margin (about 0.05 in probability) moves the second image to class
    # 3
    f = zsl_gzsl(u_logits, np.array([2, 3]), s_logits, np.array([0, 1]), seen, unseen, gamma=0.2)
    assert f["u"] == pytest.approx(1.0)

"""common/clip.py: every supported checkpoint layout loads to identical embeddings; the image path is
differentiable; bad input is a one-line UserError."""
import json

import open_clip
import pytest
import torch

from common import clip as clip_lib
from common.errors import UserError

TINY = "test-vit-tiny"
TINY_CFG = {
    "embed_dim": 32, "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PROMPTS = ["a photo of a storage tank", "something round on sand", "a ship"]


@pytest.fixture(scope="module")
def original():
    """A tiny random open_clip ViT model (logit scale moved off its init so that it is checked too)."""
    torch.manual_seed(0)
    clip_lib.register_model_config(TINY, TINY_CFG)
    model = open_clip.create_model(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():  # LayerNorm weights/biases start at 1/0: make every tensor distinctive
            p.add_(0.02 * torch.randn_like(p))
        model.logit_scale.fill_(3.0)
    return model.requires_grad_(False)  # frozen as loaded: PyTorch's attention then takes the same kernels


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    return images


def embeddings(model, images):
    with torch.no_grad():
        x = clip_lib.to_clip_input(_bundle_like(model), images)
        img = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(open_clip.get_tokenizer(TINY)(PROMPTS)), dim=-1)
    return img, txt


def _bundle_like(model):
    return clip_lib.ClipBundle(TINY, model, None, open_clip.get_tokenizer(TINY), 32,
                               open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)


def assert_same(bundle, original, images):
    want_img, want_txt = embeddings(original, images)
    with torch.no_grad():
        got_img = clip_lib.image_features(bundle, images)
    got_txt = clip_lib.encode_text_prompts(bundle, PROMPTS)
    assert torch.equal(got_img, want_img)
    assert torch.equal(got_txt, want_txt)
    assert clip_lib.logit_scale(bundle) == pytest.approx(float(torch.tensor(3.0).exp()))


def test_plain_state_dict(tmp_path, original, inputs):
    path = tmp_path / "tiny.pt"
    torch.save(original.state_dict(), path)
    bundle = clip_lib.load_clip(TINY, str(path))
    assert not bundle.model.training
    assert bundle.image_size == 32 and bundle.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert_same(bundle, original, inputs)


def test_wrapped_module_state_dict(tmp_path, original, inputs):
    path = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in original.state_dict().items()}}, path)
    assert_same(clip_lib.load_clip(TINY, str(path)), original, inputs)


@pytest.mark.slow
def test_torchscript_archive(tmp_path, original, inputs):
    path = tmp_path / "jit.pt"  # the format of OpenAI's own ViT-B-32.pt
    torch.jit.script(original).save(str(path))
    assert_same(clip_lib.load_clip(TINY, str(path)), original, inputs)


@pytest.fixture(scope="module")
def hf_model():
    """A randomly initialised tiny transformers.CLIPModel of TINY_CFG's architecture, every tensor made
    distinctive (LayerNorms start at 1/0, biases at 0, so that a swapped name would otherwise go
    unnoticed)."""
    from transformers import CLIPConfig, CLIPModel
    config = CLIPConfig(
        projection_dim=32,
        vision_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                       "hidden_act": "quick_gelu"},
        text_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "vocab_size": 49408,
                     "hidden_act": "quick_gelu"})
    torch.manual_seed(2)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
        model.logit_scale.fill_(3.0)
    return model.requires_grad_(False)


def _pooled(out):
    """transformers 5 returns the projected features as pooler_output; 4.x returned the tensor itself."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def assert_same_as_transformers(bundle, hf_model, images):
    x = clip_lib.to_clip_input(bundle, images)
    tokens = bundle.tokenizer(PROMPTS)
    with torch.no_grad():
        want_img = _pooled(hf_model.get_image_features(pixel_values=x))
        want_txt = _pooled(hf_model.get_text_features(input_ids=tokens))
        got_img, got_txt = bundle.model.encode_image(x), bundle.model.encode_text(tokens)
        assert got_img.shape == want_img.shape == (len(images), 32)
        assert torch.allclose(got_img, want_img, rtol=0, atol=1e-5), (got_img - want_img).abs().max()
        assert torch.allclose(got_txt, want_txt, rtol=0, atol=1e-5), (got_txt - want_txt).abs().max()
        normalised = torch.nn.functional.normalize
        assert torch.allclose(clip_lib.image_features(bundle, images), normalised(want_img, dim=-1),
                              atol=1e-5)
    assert torch.allclose(clip_lib.encode_text_prompts(bundle, PROMPTS), normalised(want_txt, dim=-1),
                          atol=1e-5)
    assert clip_lib.logit_scale(bundle) == pytest.approx(float(torch.tensor(3.0).exp()))


def test_hugging_face_folder_saved_by_transformers(tmp_path, hf_model, inputs):
    folder = tmp_path / "clip-rsicd-like"
    hf_model.save_pretrained(str(folder))  # config.json and model.safetensors, as on the Hub today
    assert (folder / "model.safetensors").is_file()
    clip_lib.register_model_config(TINY, TINY_CFG)
    assert_same_as_transformers(clip_lib.load_clip(TINY, str(folder)), hf_model, inputs)


def test_hugging_face_folder_with_pytorch_model_bin(tmp_path, hf_model, inputs):
    folder = tmp_path / "old-hf"
    hf_model.config.save_pretrained(str(folder))
    state = dict(hf_model.state_dict())
    state["text_model.embeddings.position_ids"] = torch.arange(32)[None]  # a buffer in older CLIPModel files
    torch.save(state, folder / "pytorch_model.bin")
    clip_lib.register_model_config(TINY, TINY_CFG)
    assert_same_as_transformers(clip_lib.load_clip(TINY, str(folder)), hf_model, inputs)


def test_checkpoint_that_carries_its_config(tmp_path, original, inputs):
    path = tmp_path / "own.pt"
    torch.save(clip_lib.checkpoint_dict(original, "test-vit-carried", TINY_CFG, note="x"), path)
    assert_same(clip_lib.load_clip(None, str(path)), original, inputs)
    assert clip_lib.load_clip("test-vit-carried", str(path)).name == "test-vit-carried"
    with pytest.raises(UserError, match="holds model 'test-vit-carried', not 'ViT-B-32'"):
        clip_lib.load_clip("ViT-B-32", str(path))


def test_image_path_is_differentiable(tmp_path, original):
    path = tmp_path / "tiny.pt"
    torch.save(original.state_dict(), path)
    bundle = clip_lib.load_clip(TINY, str(path))
    assert not any(p.requires_grad for p in bundle.model.parameters())  # frozen, yet the input gets gradients
    images = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_(True)  # resized 48 -> 32 on the way
    feats = clip_lib.image_features(bundle, images)
    assert feats.shape == (2, 32)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-5)
    text = clip_lib.encode_text_prompts(bundle, PROMPTS[:2])
    loss = torch.nn.functional.cross_entropy(100 * feats @ text.T, torch.tensor([0, 1]))
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    # the mapping to CLIP's input: -1 -> (0 - mean) / std, 1 -> (1 - mean) / std
    x = clip_lib.to_clip_input(bundle, torch.stack([-torch.ones(3, 32, 32), torch.ones(3, 32, 32)]))
    mean, std = torch.tensor(bundle.mean), torch.tensor(bundle.std)
    assert torch.allclose(x[0, :, 0, 0], -mean / std) and torch.allclose(x[1, :, 0, 0], (1 - mean) / std)


def one_line_error(fn, match):
    with pytest.raises(UserError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_missing_file_and_folder(tmp_path):
    one_line_error(lambda: clip_lib.load_clip(TINY, str(tmp_path / "nope.pt")), "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: clip_lib.load_clip(TINY, str(tmp_path / "empty")), "not a Hugging Face CLIP")


@pytest.mark.slow
def test_wrong_checkpoint_for_model(tmp_path, original):
    path = tmp_path / "tiny.pt"
    torch.save(original.state_dict(), path)
    one_line_error(lambda: clip_lib.load_clip("RN50", str(path)), "does not fit model 'RN50'")
    one_line_error(lambda: clip_lib.load_clip("no-such-model", str(path)), "unknown CLIP model 'no-such")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a pickle")
    one_line_error(lambda: clip_lib.load_clip(TINY, str(bad)), "could not be read")


def test_hf_config_with_other_heads(tmp_path, hf_model):
    folder = tmp_path / "hf"
    hf_model.save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["num_attention_heads"] = 4
    (folder / "config.json").write_text(json.dumps(config))
    clip_lib.register_model_config(TINY, TINY_CFG)
    one_line_error(lambda: clip_lib.load_clip(TINY, str(folder)), "num_attention_heads is 4")


def test_offline_pretrained_tag(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    one_line_error(lambda: clip_lib.load_clip("ViT-B-32", "openai"), "pass a local checkpoint file")
    one_line_error(lambda: clip_lib.load_clip("ViT-B-32", "no_such_tag"), "neither a file nor a pretrained")

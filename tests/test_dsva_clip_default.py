"""DSVA's CLIP: the paper's by its Hugging Face id by default (checkpoints/<name>, else the Hub), a random one
only when asked for with --clip-pretrained none."""
import huggingface_hub
import pytest

from common import clip as clip_lib
from common.errors import UserError
from DSVA import annotate, train
from DSVA.model import PAPER_CLIP


@pytest.mark.parametrize("script", [train, annotate])
def test_dsva_scripts_default_to_the_papers_clip(script):
    args = script.get_args_parser().parse_args([])
    assert args.clip_pretrained == PAPER_CLIP == "flax-community/clip-rsicd"
    assert clip_lib.pretrained_or_random(args.clip_pretrained) == PAPER_CLIP
    assert clip_lib.pretrained_or_random("none") is None and clip_lib.pretrained_or_random("None") is None


def test_hub_id_or_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    assert clip_lib.is_hub_id("flax-community/clip-rsicd")
    assert not clip_lib.is_hub_id("checkpoints/clip-rsicd")  # its first folder exists: a missing local path
    assert not clip_lib.is_hub_id("org/weights.pt")
    assert not clip_lib.is_hub_id("openai") and not clip_lib.is_hub_id("/abs/path")


def test_hub_id_is_looked_for_in_checkpoints_first(tmp_path, monkeypatch):
    monkeypatch.setattr(clip_lib, "CHECKPOINTS", str(tmp_path))
    (tmp_path / "clip-rsicd").mkdir()

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although checkpoints/ has the folder")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    assert clip_lib.hub_folder(PAPER_CLIP) == str(tmp_path / "clip-rsicd")
    # the folder then goes through the Hugging Face folder reader (here: an empty folder, refused by name)
    with pytest.raises(UserError, match="clip-rsicd"):
        clip_lib.load_clip("ViT-B-32", PAPER_CLIP)


def test_hub_id_downloads_config_and_weights_only(tmp_path, monkeypatch):
    monkeypatch.setattr(clip_lib, "CHECKPOINTS", str(tmp_path / "none_here"))
    calls = []

    def snapshot(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert clip_lib.hub_folder(PAPER_CLIP) == str(tmp_path)
    assert calls == [(PAPER_CLIP, ["config.json", "pytorch_model.bin", "model.safetensors"])]


def test_offline_hub_id_is_one_line_saying_where_to_put_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(clip_lib, "CHECKPOINTS", str(tmp_path / "checkpoints"))

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError) as e:
        clip_lib.load_clip("ViT-B-32", PAPER_CLIP)
    message = str(e.value)
    assert "\n" not in message
    assert message == (f"CLIP {PAPER_CLIP} is not in {tmp_path / 'checkpoints' / 'clip-rsicd'} and could not "
                       "be downloaded from the Hugging Face Hub ([Errno -2] Name or service not known; no "
                       "network?); put its folder (config.json and pytorch_model.bin or model.safetensors) "
                       f"at {tmp_path / 'checkpoints' / 'clip-rsicd'}, or pass another --clip-pretrained")

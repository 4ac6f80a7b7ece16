"""The numbered scripts as a user runs them: the commands of the README's "DIOR end to end" section on a tiny
DIOR release in the official layout, then DSVA on a tiny RSSDIVCS-format release, every step's file handed to
the next; the flag routing of common/flags.py; the training loader's lone last batch at 32 px."""
import argparse
import hashlib
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image, ImageDraw
from torch.utils.data import TensorDataset

from common.backbones import build_feature_resnet
from common.checkpoint import atomic_save
from common.clip import checkpoint_dict, quiet_open_clip, register_model_config
from common.distributed import setup
from common.errors import UserError
from common.flags import group_flags, route
from common.loaders import make_loader
from conftest import REPO, assert_one_line_error
from data.dior.prepare import CLASS_NAMES

CLIP_NAME = "walk-test-clip"
CLIP_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
PROVIDED = {"DIOR", "RSSDIVCS", "CLIP", "CLIP_MODEL", "RUNS", "DATA_ROOT"}  # the test's own values
# train chips of each of the 8 head and 12 tail classes; class 8 gets one more (see dior_release)
HEAD, TAIL = 6, 3


# ---------------------------------------------------------------------------------------------- the README

def readme_block(title: str) -> tuple:
    """({variable: value}, [command]) of the first bash block after the README heading `title`: assignments of
    the variables the test does not provide itself, and every command line, in order."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = re.search(rf"\n#+ {re.escape(title)}\n", text).end()
    block = re.search(r"```bash\n(.*?)```", text[start:], re.DOTALL).group(1)
    env, commands = {}, []
    for line in block.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        if re.match(r"^(export )?[A-Z_]+=", line):
            for word in words[1:] if words[0] == "export" else words:
                name, value = word.split("=", 1)
                if name not in PROVIDED:  # *_FLAGS only: no numbered script reads such a variable
                    assert name.endswith("_FLAGS"), \
                        f"README variable {name} could reach a script's environment"
                    env[name] = value
        else:
            commands.append(line)
    return env, commands


def walk(commands: list, env: dict, tmp_path, checks: dict) -> None:
    """Run each command with bash from the repository root; after each, checks[script](env) may assert
    files."""
    for command in commands:
        proc = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=600,
                              env=env, check=False)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        script = command.split()[1]
        if script in checks:
            checks.pop(script)(proc)
    assert not checks, f"the README block lacks {sorted(checks)}"


def base_env(tmp_path, **extra) -> dict:
    stamp = os.path.join(REPO, ".venv", ".installed-" + hashlib.sha1(b"".join(
        pathlib.Path(REPO, f).read_bytes() for f in ("requirements.txt", "pyproject.toml"))).hexdigest()[:12])
    if not os.path.isfile(stamp):
        pytest.skip("scripts/env.sh would install .venv first (no stamp file); run scripts/test.sh once")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "RUNS": str(tmp_path / "runs"), **extra}


def repo_outputs() -> dict:
    """What of the repository's own data/ and runs/ a walk could write; it must stay as it was."""
    paths = ["data/dior/processed", "data/rssdivcs", "runs/kmdn/dior", "runs/cdtg/dior",
             "runs/classification/dior", "runs/dsva/zsl_61", "runs/kmdn/default"]
    return {p: os.path.getmtime(os.path.join(REPO, p)) if os.path.exists(os.path.join(REPO, p)) else None
            for p in paths}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch.manual_seed(0)
    register_model_config(CLIP_NAME, CLIP_CFG)
    with quiet_open_clip():
        model = open_clip.create_model(CLIP_NAME)
    path = str(tmp_path_factory.mktemp("clip") / "tiny_clip.pt")
    atomic_save(checkpoint_dict(model, CLIP_NAME, CLIP_CFG), path)
    return path


# ---------------------------------------------------------------------------------------------- DIOR

def dior_release(raw) -> dict:
    """The official layout with one 40x40 image per object: classes 0-7 get HEAD train chips (head), the
    others TAIL, class 8 TAIL + 1 (tail 37, all 85: both leave a last batch of one at batch size 4), one test
    chip each."""
    for folder in ("JPEGImages-trainval", "JPEGImages-test", "Annotations", "ImageSets/Main"):
        os.makedirs(os.path.join(raw, folder), exist_ok=True)
    counts = {c: HEAD if c < 8 else TAIL + (c == 8) for c in range(len(CLASS_NAMES))}
    sets = {"train.txt": [], "val.txt": [], "test.txt": []}
    rng = np.random.default_rng(0)
    k = 0
    for c, name in enumerate(CLASS_NAMES):
        for i in range(counts[c] + 1):
            k += 1
            image_id, test = f"{k:05d}", i == counts[c]
            image = Image.new("RGB", (40, 40), tuple(int(v) for v in rng.integers(0, 80, 3)))
            ImageDraw.Draw(image).rectangle((6, 6, 30, 30),
                                            fill=((37 * c) % 256, (91 * c) % 256, 200 - 9 * c))
            image.save(os.path.join(raw, "JPEGImages-test" if test else "JPEGImages-trainval",
                                    f"{image_id}.jpg"))
            with open(os.path.join(raw, "Annotations", f"{image_id}.xml"), "w") as f:
                f.write(f"<annotation><size><width>40</width><height>40</height></size><object><name>{name}</name>"
                        f"<difficult>0</difficult><bndbox><xmin>4</xmin><ymin>4</ymin><xmax>32</xmax><ymax>32</ymax>"
                        f"</bndbox></object></annotation>")
            sets["test.txt" if test else ("val.txt" if i % 2 else "train.txt")].append(image_id)
    for set_name, ids in sets.items():
        with open(os.path.join(raw, "ImageSets", "Main", set_name), "w") as f:
            f.write("\n".join(ids) + "\n")
    return counts


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.slow
def test_dior_walk_with_the_readme_commands(tmp_path, tiny_clip):
    raw, data, runs = tmp_path / "DIOR", tmp_path / "dior_processed", tmp_path / "runs"
    counts = dior_release(raw)
    variables, commands = readme_block("DIOR end to end")
    assert [" ".join(c.split()[:4 if "06_classify" in c else 3]) for c in commands] == [
        "bash scripts/01_prepare.sh dior", "bash scripts/02_split.sh dior", "bash scripts/03_kmdn.sh dior",
        "bash scripts/06_classify.sh dior baseline", "bash scripts/04_cdtg_train.sh dior",
        "bash scripts/05_cdtg_generate.sh dior", "bash scripts/06_classify.sh dior tgn"]
    env = base_env(tmp_path, **variables, DIOR=str(raw), DATA_ROOT=str(data), CLIP_MODEL=CLIP_NAME,
                   CLIP=tiny_clip)
    before, repo_entries = repo_outputs(), set(os.listdir(REPO))
    kmdn, cdtg, clf = runs / "kmdn" / "dior", runs / "cdtg" / "dior", runs / "classification" / "dior"
    expanded = cdtg / "expanded_train.txt"
    n_train = sum(counts.values())

    def prepared(proc):
        with open(data / "anno" / "DIOR_train.txt") as f:
            assert len(f.read().splitlines()) == n_train == 85
        assert read_json(data / "classes.json")["names"] == CLASS_NAMES

    def split(proc):
        s = read_json(data / "split.json")
        assert s["head"] == list(range(8)) and s["tail"][0] == 8 and len(s["tail"]) == 12

    def kmdn_done(proc):
        for f in ("head/model_final.pt", "tail/model_final.pt", "distill/head_model.pt",
                  "distill/tail_model.pt"):
            assert (kmdn / f).is_file(), f
        assert read_json(kmdn / "head" / "meta.json") and (kmdn / "distill" / "summary.md").is_file()
        tail = torch.load(kmdn / "distill" / "tail_model.pt", map_location="cpu", weights_only=False)
        # --model reached train.py, not distill.py
        assert (tail["arch"], tail["img_size"]) == ("resnet18", 32)

    def classified(proc):
        assert (clf / "baseline" / "model_final.pt").is_file()

    def gan(proc):
        assert (cdtg / "train" / "generator.pt").is_file()

    def generated(proc):
        manifest = read_json(cdtg / "generated" / "manifest.json")
        with open(expanded) as f:
            lines = f.read().splitlines()
        flags = shlex.split(variables["GEN_FLAGS"])
        per_class = int(flags[flags.index("--n-per-class") + 1])
        assert len(lines) == 12 * per_class and len(manifest["classes"]) == 12
        assert {int(line.split()[-1]) for line in lines} == set(range(8, 20))
        assert (cdtg / "generated" / "quality.json").is_file()

    def tgn(proc):
        assert (clf / "tgn" / "model_final.pt").is_file()
        with open(clf / "tgn" / "args.yaml") as f:
            assert str(expanded) in f.read()

    try:
        walk(commands, env, tmp_path, {"scripts/01_prepare.sh": prepared, "scripts/02_split.sh": split,
                                       "scripts/03_kmdn.sh": kmdn_done, "scripts/04_cdtg_train.sh": gan,
                                       "scripts/05_cdtg_generate.sh": generated})
        # 06 runs twice (baseline, then tgn); walk() checks a script once, so both are checked here
        classified(None)
        tgn(None)
    finally:
        shutil.rmtree(runs, ignore_errors=True)  # about 1 GB of checkpoints
    assert repo_outputs() == before
    assert set(os.listdir(REPO)) == repo_entries


@pytest.mark.slow
def test_unaccepted_flag_is_refused_before_anything_runs(tmp_path):
    env = base_env(tmp_path, DATA_ROOT=str(tmp_path / "nowhere"))
    proc = subprocess.run(["bash", "scripts/03_kmdn.sh", "dior", "--epochs", "1", "--no-such-flag", "3"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert_one_line_error(proc, "no script of 03_kmdn.sh accepts --no-such-flag", "KMDN/distill.py")
    assert not (tmp_path / "runs").exists()
    # a stage of one script: its argparse refuses the flag, also the start of a longer one (--data of
    # --data-root)
    proc = subprocess.run(["bash", "scripts/06_classify.sh", "dior", "baseline", "--data", "x"], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert_one_line_error(proc, "unrecognized arguments: --data x", "--help")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------- DSVA

def rssdivcs_release(root, split: str) -> None:
    """4 classes x 4 images in the released .mat layout (paths on the authors' machine, 1-based indices)."""
    import scipy.io

    def cell(strings):
        arr = np.empty((len(strings), 1), dtype=object)
        for i, s in enumerate(strings):
            arr[i, 0] = np.array([s])
        return arr

    names = ["airport", "beach", "forest", "harbor"]  # harbor unseen
    os.makedirs(root / "files")
    paths, labels = [], []
    for c, name in enumerate(names):
        os.makedirs(root / "images" / name)
        for i in range(4):
            Image.new("RGB", (24, 24), (60 * c, 40 * i, 90)).save(root / "images" / name / f"{i}.jpg")
            paths.append(f"/home/author/RSSDIVCS/images/{name}/{i}.jpg")
            labels.append(c + 1)
    seen = [i for i in range(len(paths)) if labels[i] <= 3]
    train = [i + 1 for i in seen if i % 4 < 3]
    test_seen = [i + 1 for i in seen if i % 4 == 3]
    test_unseen = [i + 1 for i in range(len(paths)) if labels[i] == 4]
    scipy.io.savemat(root / "files" / f"{split}_images.mat",
                     {"image_files": cell(paths), "labels": np.array(labels)[:, None]})
    col = lambda v: np.array(v)[:, None]
    scipy.io.savemat(root / "files" / f"ann_attr_finetune_{split}_splits.mat", {
        "train_zsl_loc_0": col(train), "train_gzsl_loc_0": col(train), "test_seen_loc_0": col(test_seen),
        "test_unseen_loc_0": col(test_unseen), "allclasses_names": cell(names),
        "att": np.random.default_rng(0).random((5, 4))})
    with open(root / "files" / "attri_group_3.json", "w") as f:
        json.dump({"functions": [0, 1], "materials": [2], "surface_properties": [3, 4]}, f)


@pytest.mark.slow
def test_dsva_walk_with_the_readme_commands(tmp_path, tiny_clip):
    rssdivcs_release(tmp_path / "RSSDIVCS", "61")
    variables, commands = readme_block("DSVA on RSSDIVCS end to end")
    assert [c.split()[:3] for c in commands] == [["bash", "scripts/10_dsva.sh", "zsl_61"],
                                                 ["python", "DSVA/test.py", "--weights"]]
    env = base_env(tmp_path, **variables, DATA_ROOT=str(tmp_path / "RSSDIVCS"), CLIP_MODEL=CLIP_NAME,
                   CLIP=tiny_clip)
    before = repo_outputs()
    run = tmp_path / "runs" / "dsva" / "zsl_61"

    def trained(proc):
        assert (run / "model_final.pt").is_file() and (run / "results.md").is_file()
        assert read_json(run / "results.json")

    def tested(proc):
        assert read_json(run / "test" / "model_final" / "results.json")

    walk(commands, env, tmp_path, {"scripts/10_dsva.sh": trained, "DSVA/test.py": tested})
    assert repo_outputs() == before


# ---------------------------------------------------------------------------------------------- routing

def toy_parsers() -> dict:
    a = argparse.ArgumentParser()
    a.add_argument("--model")
    a.add_argument("--epochs", type=int)
    a.add_argument("--lr-drop-epochs", type=int, nargs="*")
    a.add_argument("--hflip", action=argparse.BooleanOptionalAction)
    a.add_argument("--lr", type=float)
    b = argparse.ArgumentParser()
    b.add_argument("--epochs", type=int)
    b.add_argument("--weights", nargs="+")
    b.add_argument("--lr", type=float)
    return {"a": ("A.py", a), "b": ("B.py", b)}


def test_route_gives_each_flag_with_its_values_to_the_scripts_that_take_it():
    words = ["--model", "resnet18", "--epochs", "1", "--lr-drop-epochs", "3", "5", "--no-hflip", "--lr",
             "-1e-3", "--weights=x", "--lr-drop-epochs"]
    routed = route(words, toy_parsers(), {}, {}, "s.sh")
    assert routed == {"a": ["--model", "resnet18", "--epochs", "1", "--lr-drop-epochs", "3", "5",
                            "--no-hflip", "--lr", "-1e-3", "--lr-drop-epochs"],
                      "b": ["--epochs", "1", "--lr", "-1e-3", "--weights=x"]}
    assert route(["--epochs", "2"], toy_parsers(), {"b": {"--epochs"}}, {}, "s.sh") == \
        {"a": ["--epochs", "2"], "b": []}


@pytest.mark.parametrize("words, skip, env, message", [
    (["--nope", "1"], {}, {}, "no script of s.sh accepts --nope (A.py, B.py)"),
    (["--weights", "w"], {"b": {"--weights"}}, {}, "no script of s.sh accepts --weights"),
    (["--epochs"], {}, {}, "--epochs needs a value"),
    (["--epochs", "--lr", "1"], {}, {}, "--epochs needs a value"),
    (["resnet18"], {}, {}, "'resnet18' is not a flag"),
    (["--model", "a", "b"], {}, {}, "'b' is not a flag"),
    (["--model", "a"], {}, {"--model": "MODEL"}, ("s.sh sets --model itself: set the environment variable "
                                                  "MODEL=")),
])
def test_route_refuses(words, skip, env, message):
    with pytest.raises(UserError, match=re.escape(message)):
        route(words, toy_parsers(), skip, env, "s.sh")


def test_group_flags_keeps_words_of_an_unknown_flag_together():
    assert group_flags(["--x", "1", "2", "--y"], {}) == [("--x", ["--x", "1", "2"]), ("--y", ["--y"])]


# ---------------------------------------------------------------------------------------------- last batch

def test_training_drops_a_lone_last_batch_and_trains_at_32px():
    rt = setup("cpu")
    data = TensorDataset(torch.randn(9, 3, 32, 32), torch.arange(9) % 3)  # 9 = 2 x 4 + 1
    sizes = [len(y) for _, y in make_loader(data, 4, True, rt, 0)]
    assert sizes == [4, 4]
    assert [len(y) for _, y in make_loader(data, 4, False, rt, 0)] == [4, 4, 1]  # evaluation sees every image
    assert [len(b[0]) for b in make_loader(TensorDataset(torch.zeros(10, 1)), 4, True, rt, 0)] == [4, 4, 2]
    assert [len(b[0]) for b in make_loader(TensorDataset(torch.zeros(1, 1)), 4, True, rt, 0)] == [1]
    model = build_feature_resnet("resnet18", 3, "none", verbose=False).train()
    for x, y in make_loader(data, 4, True, rt, 0):
        logits = model(x)[0]
        torch.nn.functional.cross_entropy(logits, y).backward()


@pytest.mark.slow
def test_interrupted_kmdn_script_is_finished_by_the_same_command(tmp_path, synth_root):
    """Ctrl-C in the tail model's second epoch of scripts/03_kmdn.sh; the same command continues that run
    (--resume added), starts distillation and tests; run a third time, it finds everything finished."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import sys\nsys.path.insert(0, "
                                           f"{os.path.join(REPO, 'tests')!r})\nimport "
                                           "interrupting\ninterrupting.wrap_if_named(sys.argv)\n")
    env = base_env(tmp_path, DATA_ROOT=synth_root, PYTHONPATH=f"{hook}:{REPO}")
    command = ["bash", "scripts/03_kmdn.sh", "synthetic", "--model", "resnet18", "--weights", "none",
               "--epochs", "2", "--img-size", "32", "--batch-size", "32", "--workers", "0", "--device", "cpu"]
    kmdn = tmp_path / "runs" / "kmdn" / "synthetic"
    stopped = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
                             env={**env,
                                  "INTERRUPT_AT": "KMDN/train.py tail common.engine:train_one_epoch@2"})
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1] == (f"interrupted; the last checkpoint is {kmdn}/tail/"
                                                       "ckpt_last.pt: run the same command with --resume to "
                                                       "continue")
    assert (kmdn / "head" / "model_final.pt").is_file() and not (kmdn / "tail" / "model_final.pt").exists()
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
                           check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {kmdn}/tail/ckpt_last.pt at epoch 1" in again.stdout
    assert (kmdn / "distill" / "tail_model.pt").is_file()
    assert (kmdn / "distill" / "test_tail_model" / "results.json").is_file()
    third = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
                           check=False)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("is already finished with these settings; nothing to do") == 2

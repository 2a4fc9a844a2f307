"""Security (issue 9 item 3): untrusted files are never unpickled, commands never run unasked.

1. A static scan of every Python file outside test/ for calls that unpickle, run a shell or
   evaluate code; the few justified exceptions are in `ALLOWED` with the reason.
2. Planted pickles and pipes in each kind of file a stranger may hand over (token dumps,
   manifests, checkpoints, packed models) are refused and their payload never runs. Each
   payload is first shown to run through the naive reader, so the test cannot pass vacuously.
3. wav.scp pipes run only with --allow_pipes.

Also covered elsewhere: test_api.py::test_loading_refuses_a_pickle_instead_of_weights (pickle as
packed weights), test_audio.py::test_pipes_need_opt_in (the library switch),
test_datadir.py::test_valid_directory_has_no_problems_and_pipes_are_not_run (validation never
runs pipes), and the recipe path with a space: test_recipe_data.py (every stage of the smoke
preset) and test_recipe_template.py.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import NamedTuple

import kaldiio
import numpy as np
import pytest
import yaml
from tiny_model import TinyModel

from opuslm.bin import tokenize_audio
from opuslm.data.ark import ArkError, ScpTable
from opuslm.data.dataset import TaskDataset
from opuslm.data.manifest import Manifest, build_manifest
from opuslm.packing import PackError, load_packed
from opuslm.train import checkpoint as ckpt
from opuslm.vocab import TokenList
from robustness.helpers import write_lines

REPO = Path(__file__).resolve().parents[2]

# torch warns about the pickle protocol of the planted files it refuses; kaldiio about the
# payload it was made to run.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
    pytest.mark.filterwarnings("ignore:An error happend when loading:UserWarning"),
]

# ------------------------------------------------------------------------------ static scan
# Calls that unpickle (or may: kaldiio's readers unpickle PKL records and run `cmd |` entries),
# run a shell or evaluate code, whatever their arguments.
NEVER = {
    "pickle.load": "unpickles",
    "pickle.loads": "unpickles",
    "pickle.Unpickler": "unpickles",
    "_pickle.load": "unpickles",
    "_pickle.loads": "unpickles",
    "dill.load": "unpickles",
    "dill.loads": "unpickles",
    "cloudpickle.load": "unpickles",
    "joblib.load": "unpickles",
    "shelve.open": "unpickles",
    "marshal.load": "loads code objects",
    "marshal.loads": "loads code objects",
    "pandas.read_pickle": "unpickles",
    "numpy.lib.format.read_array": "unpickles unless allow_pickle=False",
    "yaml.unsafe_load": "constructs arbitrary objects",
    "yaml.full_load": "constructs Python objects",
    "yaml.full_load_all": "constructs Python objects",
    "kaldiio.load_scp": "unpickles PKL records and runs `cmd |` entries (use opuslm.data.ark)",
    "kaldiio.load_scp_sequential": "unpickles PKL records and runs pipes (use opuslm.data.ark)",
    "kaldiio.load_mat": "unpickles PKL records and runs pipes (use opuslm.data.ark)",
    "kaldiio.load_ark": "unpickles PKL records and runs pipes (use opuslm.data.ark)",
    "kaldiio.ReadHelper": "unpickles PKL records and runs pipes (use opuslm.data.ark)",
    "os.system": "runs a shell",
    "os.popen": "runs a shell",
    "eval": "evaluates code",
    "exec": "evaluates code",
}
SUBPROCESS = {"subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call"}
SUBPROCESS |= {"subprocess.check_output", "subprocess.getoutput", "subprocess.getstatusoutput"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "yaml.SafeLoader", "yaml.CSafeLoader"}
# (file relative to the repository, resolved call): why it is acceptable.
ALLOWED = {
    ("opuslm/audio.py", "subprocess.run"): (
        "Kaldi `cmd |` wav.scp entries, run only with allow_pipes=True (--allow_pipes): "
        "test_audio.py::test_pipes_need_opt_in, test_security.py::test_wav_scp_pipes_need_opt_in"
    ),
}


class Finding(NamedTuple):
    path: str
    line: int
    call: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.call}(...) {self.reason}"


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> full dotted name, from the module's imports (`np` -> `numpy`, `load` from
    `from torch import load` -> `torch.load`)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                aliases[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in call.keywords
    )


def _reason(name: str, call: ast.Call) -> str | None:
    """Why this call is unsafe with untrusted input, or None."""
    if name in NEVER:
        return NEVER[name]
    if name == "torch.load" and not _keyword_is(call, "weights_only", True):
        return "unpickles: needs weights_only=True"
    if name == "numpy.load" and not _keyword_is(call, "allow_pickle", False):
        if any(k.arg == "allow_pickle" for k in call.keywords):
            return "may unpickle: allow_pickle must be False"
    if name in ("yaml.load", "yaml.load_all"):
        loader = next((k.value for k in call.keywords if k.arg == "Loader"), None)
        if loader is None or _dotted(loader) not in SAFE_YAML_LOADERS:
            return "constructs arbitrary objects: use yaml.safe_load"
    if name.endswith("from_pretrained") and _keyword_is(call, "trust_remote_code", True):
        return "runs the model repository's code"
    if name in SUBPROCESS and not _keyword_is(call, "shell", False):
        if any(k.arg == "shell" for k in call.keywords):
            return "runs a shell"
    return None


def unsafe_calls(source: str, path: str) -> list[Finding]:
    tree = ast.parse(source, filename=path)
    aliases = _aliases(tree)
    findings = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        name = aliases.get(head, head) + (f".{rest}" if rest else "")
        reason = _reason(name, node)
        if reason:
            findings.append(Finding(path, node.lineno, name, reason))
    return findings


def library_files() -> list[Path]:
    """Every Python file of the repository outside the tests, build outputs and hidden
    directories (environments, caches, copies of the tree)."""
    skip = {"test", "build", "dist"}
    files = []
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if parts[0] in skip or any(p.startswith(".") or p.endswith(".egg-info") for p in parts):
            continue
        files.append(path)
    return sorted(files)


def test_no_library_code_unpickles_runs_a_shell_or_evaluates_code():
    files = library_files()
    assert len(files) > 50 and REPO / "opuslm" / "data" / "ark.py" in files
    findings, allowed_seen = [], set()
    for path in files:
        relative = str(path.relative_to(REPO))
        for finding in unsafe_calls(path.read_text(encoding="utf-8"), relative):
            if (relative, finding.call) in ALLOWED:
                allowed_seen.add((relative, finding.call))
            else:
                findings.append(str(finding))
    assert findings == []
    unused = set(ALLOWED) - allowed_seen
    assert not unused, f"remove these entries from ALLOWED, nothing needs them: {unused}"


def test_the_scan_finds_each_kind_of_unsafe_call():
    source = """
import pickle, torch, yaml, subprocess, kaldiio
import numpy as np
from torch import load as tload
from transformers import AutoModel
pickle.loads(b"")
torch.load("x")
tload("x", weights_only=False)
np.load("x", allow_pickle=True)
yaml.load("x", Loader=yaml.Loader)
kaldiio.load_scp("x.scp")
subprocess.run("ls", shell=True)
AutoModel.from_pretrained("x", trust_remote_code=True)
eval("1")
torch.load("x", weights_only=True)
np.load("x")
np.load("x", allow_pickle=False)
yaml.load("x", Loader=yaml.SafeLoader)
yaml.safe_load("x")
subprocess.run(["ls"])
"""
    findings = unsafe_calls(source, "example.py")
    assert [(f.line, f.call) for f in findings] == [
        (6, "pickle.loads"),
        (7, "torch.load"),
        (8, "torch.load"),
        (9, "numpy.load"),
        (10, "yaml.load"),
        (11, "kaldiio.load_scp"),
        (12, "subprocess.run"),
        (13, "transformers.AutoModel.from_pretrained"),
        (14, "eval"),
    ]


# ------------------------------------------------------------------------- planted payloads
class Payload:
    """Unpickling this touches `marker`: proof that the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload_ran"


def test_pickled_record_in_a_token_dump_is_refused(dump, tmp_path: Path, marker: Path):
    table = {key: np.asarray(value) for key, value in ScpTable(dump["text"]).items()}
    table["spk1_utt001"] = Payload(marker)
    kaldiio.save_ark(
        str(dump["text"].with_suffix(".ark")),
        table,
        scp=str(dump["text"]),
        write_function="pickle",
    )
    with pytest.raises(ArkError, match=r"text\.scp:2: 'spk1_utt001': .*pickled records are"):
        ScpTable(dump["text"])["spk1_utt001"]
    assert not marker.exists()
    kaldiio.load_scp(str(dump["text"]))["spk1_utt001"]  # what the data loader used to call
    assert marker.exists()


def test_pipe_in_a_token_scp_is_never_run(dump, tmp_path: Path, marker: Path):
    lines = dump["text"].read_text().splitlines()
    lines[1] = f"spk1_utt001 touch {marker} |"
    write_lines(dump["text"], lines)
    with pytest.raises(ArkError, match=r"text\.scp:2: 'spk1_utt001': .* is a shell pipe"):
        ScpTable(dump["text"])
    with pytest.raises(ArkError, match="shell pipe"):
        build_manifest("textlm", "x", dump["token_list"], {"text": dump["text"]}, tmp_path / "m")
    assert not marker.exists()
    with contextlib.suppress(Exception):  # kaldiio runs the command, then fails to parse nothing
        kaldiio.load_scp(str(dump["text"]))["spk1_utt001"]
    assert marker.exists()


def test_pipe_as_a_manifest_entry_path_is_never_run(dump, tmp_path: Path, marker: Path):
    output = tmp_path / "manifest" / "data.json"
    output.parent.mkdir()
    build_manifest("textlm", "x", dump["token_list"], {"text": dump["text"]}, output).save()
    manifest = json.loads(output.read_text())
    manifest["entries"]["text"] = f"touch {marker} |"
    output.write_text(json.dumps(manifest))
    with pytest.raises(ArkError, match=r"touch .* \|: cannot read the scp file \(No such file"):
        TaskDataset([Manifest.load(output)], TokenList.load(dump["token_list"]))
    assert not marker.exists()


def test_pickled_training_state_is_refused(tiny: TinyModel, tmp_path: Path, marker: Path):
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny.checkpoint_dir.parent, root)
    state_path = root / "step_5" / ckpt.TRAIN_STATE
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        state_path.write_bytes(pickle.dumps({"step": Payload(marker)}, protocol=protocol))
        with pytest.raises(ckpt.CheckpointError, match="train_state.pt: refused: not a training"):
            ckpt.load_train_state(root / "step_5")
        assert not marker.exists()
    pickle.loads(state_path.read_bytes())
    assert marker.exists()


# name: (file inside the packed directory, how the payload is written there)
PACKED_PLANTS = {
    "semantic centroids": ("semantic/centroids.npy", "npy"),
    "codec weights": ("codec/codebooks.safetensors", "pickle"),
    "text tokenizer model": ("text_tokenizer/sentencepiece.model", "pickle"),
    "default prompt": ("default_prompt.safetensors", "pickle"),
}


@pytest.mark.parametrize("case", PACKED_PLANTS)
def test_pickle_planted_in_a_packed_model_is_refused(tiny, tmp_path: Path, marker: Path, case):
    packed = tmp_path / "packed"
    shutil.copytree(tiny.packed_dir, packed)
    relative, kind = PACKED_PLANTS[case]
    target = packed / relative
    assert target.is_file()
    if kind == "npy":
        np.save(target, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    else:
        target.write_bytes(pickle.dumps({"weights": Payload(marker)}))
    with pytest.raises(PackError, match=f"{packed / Path(relative).parts[0]}"):
        load_packed(packed)
    assert not marker.exists()


@pytest.mark.parametrize(
    "key, entry",
    [
        ("semantic", "../outside/semantic"),
        ("codec", "/tmp/some/codec"),
        ("default_prompt", "prompts/../../prompt.safetensors"),
    ],
)
def test_a_packed_config_cannot_point_outside_its_directory(tiny, tmp_path: Path, key, entry):
    """Whatever sits outside a downloaded packed model is not part of it: an entry that leaves
    the directory is refused before anything is read."""
    packed = tmp_path / "packed"
    shutil.copytree(tiny.packed_dir, packed)
    config = yaml.safe_load((packed / "config.yaml").read_text())
    config[key] = entry
    (packed / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(PackError, match=f"{key} must be a path inside the packed directory"):
        load_packed(packed)


# ------------------------------------------------------------------------- wav.scp pipes
def test_wav_scp_pipes_need_opt_in(tiny: TinyModel, tmp_path: Path, marker: Path, caplog):
    caplog.set_level(logging.INFO)
    data = tmp_path / "data"
    data.mkdir()
    pipe = f"sh -c 'touch {marker}; cat {tiny.wavs['utt_a']}' |"
    write_lines(data / "wav.scp", [f"a {tiny.wavs['utt_b']}", f"b {pipe}"])
    argv = ["--data_dir", str(data), "--semantic_dir", str(tiny.semantic_dir)]
    argv += ["--codec_dir", str(tiny.codec_dir), "--output_dir", str(tmp_path / "dump")]
    assert tokenize_audio.main(argv) == 1
    assert "utterance b: wav.scp entry" in caplog.text and "--allow_pipes" in caplog.text
    assert tokenize_audio.main([*argv, "--skip_bad"]) == 0
    assert "skipped 1" in caplog.text
    assert not marker.exists()
    assert list(ScpTable(tmp_path / "dump" / "speech.scp")) == ["a"]
    assert tokenize_audio.main([*argv, "--allow_pipes"]) == 0  # other options: dumped again
    assert marker.exists()
    assert list(ScpTable(tmp_path / "dump" / "speech.scp")) == ["a", "b"]
    assert os.path.getsize(tmp_path / "dump" / "speech.1.ark") > 0

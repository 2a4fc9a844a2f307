"""Stage 1 of the recipes: mini_flite's synthesised corpus and LibriSpeech's data directories.

Each recipe directory is made by the template's setup.sh under a path with a space, with the
corpus's real `local/` linked in, so the scripts run exactly as in egs2/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from opuslm.bin import prepare_flite_corpus as flite
from opuslm.bin import prepare_librispeech as librispeech

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "egs2" / "TEMPLATE" / "speechlm1" / "setup.sh"

# 12 distinct sentences in fortune format, with an attribution, a quote, a digit sentence (dropped)
# and a duplicate differing only in case and punctuation (dropped).
FORTUNE_TEXT = """\
The early bird catches the worm. The late owl sees the stars.
%
A journey of a thousand miles begins with one step.
\t\t-- Lao Tzu
%
Patience is a tree whose root is bitter, but its fruit is sweet.
%
Every cloud has a silver lining somewhere above.
%
"Never trust a computer you cannot throw out of a window."
%
Curiosity is the wick in the candle of learning.
%
There are 10 kinds of people in the world.
%
the early bird catches the worm!
%
Fortune favours the bold and the well prepared.
%
Still waters run deep in the quiet valley.
%
Laughter is the shortest distance between two people.
%
A smooth sea never made a skilled sailor.
%
Knowledge speaks, but wisdom listens to the rain.
"""
SIZES = ["--num_train", "4", "--num_valid", "2", "--num_test", "2", "--num_text_test", "2"]
SPEECH_SETS = ("train", "valid", "test")
TEXT_SETS = ("text_train", "text_test")


def make_recipe(root: Path, corpus: str, linked: tuple[str, ...] = ("local",)) -> Path:
    """A recipe directory from setup.sh, with `linked` entries of egs2/<corpus>/speechlm1."""
    recipe = root / "my recipes" / corpus / "speechlm1"
    subprocess.run([str(SETUP), str(recipe)], check=True, capture_output=True)
    for name in linked:
        target = recipe / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        target.symlink_to(REPO / "egs2" / corpus / "speechlm1" / name)
    return recipe


def run_script(recipe: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), cwd=recipe, capture_output=True, text=True, env=env, timeout=120
    )


def read_table(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split(" ", 1) if " " in line else (line, "") for line in lines)


def validate(data_dir: Path, *options: str) -> None:
    result = subprocess.run(
        [str(REPO / "utils" / "validate_data_dir.sh"), *options, str(data_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "OPUSLM_PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def flite_recipe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    recipe = make_recipe(tmp_path_factory.mktemp("flite"), "mini_flite")
    source = recipe / "fortune text"
    source.write_text(FORTUNE_TEXT, encoding="utf-8")
    result = run_script(
        recipe,
        "local/data.sh",
        "--text_source",
        str(source),
        "--voices",
        "slt kal16",
        "--nj",
        "2",
        *SIZES,
    )
    assert result.returncode == 0, result.stderr
    return recipe, result.stderr


def test_flite_data_dirs_are_valid(flite_recipe):
    recipe, _ = flite_recipe
    for name in SPEECH_SETS:
        validate(recipe / "data" / name)
        for wav in read_table(recipe / "data" / name / "wav.scp").values():
            info = soundfile.info(wav)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert " " in wav  # the recipe path has a space and still works
    for name in TEXT_SETS:
        validate(recipe / "data" / name, "--require", "text,utt2spk")


def test_flite_splits_are_text_disjoint_and_every_voice_speaks_in_every_set(flite_recipe):
    recipe, _ = flite_recipe
    texts = {name: read_table(recipe / "data" / name / "text") for name in SPEECH_SETS + TEXT_SETS}
    assert {name: len(t) for name, t in texts.items()} == {
        "train": 4,
        "valid": 2,
        "test": 2,
        "text_test": 2,
        "text_train": 2,  # 12 sentences in the file, 13 after splitting, minus a digit and a dup
    }
    keys = {name: {flite.dedup_key(s) for s in t.values()} for name, t in texts.items()}
    all_keys = [k for ks in keys.values() for k in ks]
    assert len(all_keys) == len(set(all_keys)) == 12
    all_texts = {s for t in texts.values() for s in t.values()}
    assert "Never trust a computer you cannot throw out of a window." in all_texts
    assert not any("Lao Tzu" in s or "10 kinds" in s for s in all_texts)
    for name in SPEECH_SETS:
        speakers = read_table(recipe / "data" / name / "utt2spk")
        assert set(speakers.values()) == {"slt", "kal16"}
        assert all(uttid.startswith(spk + "-") for uttid, spk in speakers.items())


def test_flite_rerun_keeps_existing_wavs(flite_recipe):
    recipe, first_log = flite_recipe
    assert "0 wavs exist, 8 to make" in first_log
    wavs = sorted((recipe / "downloads" / "flite").rglob("*.wav"))
    stamps = [w.stat().st_mtime_ns for w in wavs]
    source = recipe / "fortune text"
    result = run_script(
        recipe, "local/data.sh", "--text_source", str(source), "--voices", "slt kal16", *SIZES
    )
    assert result.returncode == 0, result.stderr
    assert "8 wavs exist, 0 to make" in result.stderr
    assert [w.stat().st_mtime_ns for w in wavs] == stamps


def test_flite_missing_is_a_one_line_error(tmp_path):
    recipe = make_recipe(tmp_path, "mini_flite")
    no_flite = tmp_path / "bin without flite"
    no_flite.mkdir()
    for directory in dict.fromkeys(os.environ["PATH"].split(os.pathsep)):
        if not Path(directory).is_dir():
            continue
        for tool in Path(directory).iterdir():
            if not tool.name.startswith("flite") and not (no_flite / tool.name).exists():
                (no_flite / tool.name).symlink_to(tool)
    result = run_script(recipe, "local/data.sh", env={**os.environ, "PATH": str(no_flite)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "local/data.sh: flite not found: run 'make install' or 'apt-get install flite'"
    ]


# In the default suite on purpose: CI runs the whole smoke preset (about 90 s on 2 idle cores).
@pytest.mark.timeout(900)
def test_mini_flite_smoke_preset_runs_every_stage(tmp_path):
    recipe = make_recipe(tmp_path, "mini_flite", linked=("local", "conf", "run.sh"))
    result = subprocess.run(
        ["./run.sh", "--preset", "smoke"], cwd=recipe, capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in range(1, 12):
        assert f"Stage {stage}: " in result.stderr
    exp = recipe / "exp"
    model = exp / "speechlm_smoke_anneal"
    for task in ("asr", "tts"):
        score = json.loads((model / f"decode_{task}_test" / "score.json").read_text())
        assert score["num_utts"] == 4
    # conf/smoke/decode.yaml's joint CTC / LM beam search reached stage 9's decoding.
    settings = (model / "decode_asr_test" / "decode_config.yaml").read_text().splitlines()
    assert {"beam_size: 2", "ctc_weight: 0.5", "lexicon_penalty: 2.0"} <= set(settings)
    # ... with stage 5's lexicon of the training text, packed with the model.
    lexicon = (recipe / "data" / "lexicon.txt").read_text()
    assert (model / "packed" / "lexicon.txt").read_text() == lexicon
    assert f"lexicon_words: {len(lexicon.splitlines())}" in settings
    # ... and its word LM over the same words.
    word_lm = (recipe / "data" / "word_lm.counts").read_text()
    assert (model / "packed" / "word_lm.counts").read_text() == word_lm
    assert {"word_lm_weight: 0.3", f"word_lm_words: {len(lexicon.splitlines())}"} <= set(settings)
    assert "## asr: test" in (model / "RESULTS.md").read_text()
    # The smoke preset trains on aligned TTS (run.sh --tts_align true): stage 5 trained the
    # aligner and aligned every set, the TTS manifests interleave, stage 9 decodes to match.
    assert (exp / "aligner" / "phonetic_encoder.safetensors").is_file()
    for name in ("train", "valid", "test"):
        assert (recipe / "dump" / "align" / name / "align.scp").is_file()
        manifest = json.loads((exp / "manifests" / f"tts_{name}" / "data.json").read_text())
        assert "align" in manifest["entries"]
    tts_settings = (model / "decode_tts_test" / "decode_config.yaml").read_text().splitlines()
    assert "interleave_text: true" in tts_settings
    assert (model / "packed" / "model.safetensors").is_file()
    assert (exp / "base_lm_smoke" / "hf" / "model.safetensors").is_file()
    copy = json.loads((model / "copy_synthesis_test" / "score.json").read_text())
    assert copy["num_utts"] == 4 and copy["test_set"] == "test"
    # The study's control keeps the anneal config's learning rate; annealing decays it to 0.
    lrs = {
        run: [r["lr"] for r in map(json.loads, open(exp / run / "train.log.jsonl")) if "lr" in r]
        for run in ("speechlm_smoke_constlr", "speechlm_smoke_anneal")
    }
    assert set(lrs["speechlm_smoke_constlr"]) == {6.0e-4}
    assert lrs["speechlm_smoke_anneal"][-1] == 0.0
    ref_wers = set()
    for run in ("speechlm_smoke", "speechlm_smoke_constlr", "speechlm_smoke_anneal"):
        tts = json.loads((exp / run / "decode_tts_test_first2" / "score.json").read_text())
        assert tts["num_utts"] == 2
        ref_wers.add(tts["ref_wer"])
    # The reference audio was judged once per utterance and reused by every model and subset.
    assert len(ref_wers) == 1
    cached = json.loads((exp / "judge_ref_transcripts" / "test.json").read_text())
    assert len(cached["utts"]) == 4
    assert "4 reference transcripts from exp/judge_ref_transcripts/test.json" in result.stderr
    timings = (exp / "timings_smoke.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in timings] == [str(n) for n in range(1, 12)]
    check_results_table((exp / "RESULTS_smoke.md").read_text())


def table_rows(results: str, heading: str) -> dict[str, list[str]]:
    """The rows of the markdown table under `## heading`, keyed by their first two cells."""
    section = results.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {
        " / ".join(c.strip() for c in row[:2]): [c.strip() for c in row[2:]] for row in rows[1:]
    }


def check_results_table(results: str) -> None:
    """Every row of the recipe summary is there, and its figures are numbers."""
    expected = {
        "ASR": ["test / speechlm_smoke_anneal"],
        "TTS: judge WER": [
            "test / reference audio",
            "test / codec copy synthesis",
            "test / TTS (speechlm_smoke_anneal)",
        ],
        "Does the model use its condition?": ["test / asr", "test / tts"],
        "Text perplexity": [
            "text_test / base LM (base_lm_smoke/hf)",
            "text_test / OpusLM (speechlm_smoke_anneal)",
        ],
        "Annealing study": [
            "pre-training checkpoint / speechlm_smoke",
            "constant-LR continuation / speechlm_smoke_constlr",
            "annealed / speechlm_smoke_anneal",
        ],
        "Wall time per stage": [f"{n} / {title}" for n, title in enumerate(STAGE_TITLES, 1)],
    }
    for heading, labels in expected.items():
        rows = table_rows(results, heading)
        assert list(rows)[: len(labels)] == labels, heading
        for label in labels:
            cells = rows[label]
            if heading == "TTS: judge WER" and "copy synthesis" in label:
                cells = cells[:1] + cells[2:]  # copy synthesis has no CER
            if heading == "Wall time per stage":
                cells = cells[:1]  # seconds; then the date
            if heading == "Does the model use its condition?":
                cells = cells[:3]  # CE own, CE other, gain; the smoke preset has no TTS CTC
            if heading == "ASR":  # WER, its bootstrap interval "low-high", CER, #utts
                low, high = map(float, cells[1].split("-"))
                assert low <= float(cells[0]) <= high, cells
                cells = cells[:1] + cells[2:]
            for cell in cells:
                float(cell)  # every figure parses
    study = results.split("## Annealing study", 1)[1]
    for other in ("pre-training checkpoint", "constant-LR continuation"):
        assert f"- annealed minus {other}, ASR WER on test (4 utterances): " in study
    assert "./speechlm.sh --local_data_opts" in results.split("## Commands", 1)[1]
    assert "cores usable" in results.split("## Environment", 1)[1]


STAGE_TITLES = (
    "data preparation", "audio formatting", "tokenizer training", "tokenization",
    "vocabulary + manifests", "base text LM", "pre-training", "annealing", "inference",
    "scoring", "packing",
)  # fmt: skip


def test_flite_sentence_cleaning():
    assert flite.clean_sentence("Don't panic -- it's only a test!!!") == (
        "Don't panic, it's only a test!"
    )
    assert (
        flite.clean_sentence("\u201cQuoted\u201d words (kept) here.") == "Quoted words kept here."
    )
    assert flite.clean_sentence("Call 555-1234 for help now.") is None  # digits
    assert flite.clean_sentence("Send mail to root@localhost right now.") is None  # symbols
    assert flite.clean_sentence("Too short.") is None
    assert flite.clean_sentence(" ".join(["word"] * 17)) is None
    assert flite.split_sentences("Mr. Smith went home. He slept! Did he?") == [
        "Mr. Smith went home.",
        "He slept!",
        "Did he?",
    ]
    assert flite.split_sentences("J. R. R. Tolkien wrote books. Many.") == [
        "J. R. R. Tolkien wrote books.",
        "Many.",
    ]


def test_flite_entries_drop_attributions(tmp_path):
    fortunes = tmp_path / "f"
    fortunes.write_text("%\nOne two three four.\n\t\t-- Someone\n%\nFive six\nseven eight.\n%")
    assert flite.read_entries(fortunes) == ["One two three four.", "Five six seven eight."]
    lines = tmp_path / "lines.txt"
    lines.write_text("first line here now\n\nsecond line here now\n")
    assert flite.read_entries(lines) == ["first line here now", "second line here now"]


def test_flite_too_few_sentences_is_an_error():
    with pytest.raises(flite.CorpusError, match="ask for 5 sentences but .* only 3"):
        flite.deal_sentences(["a", "b", "c"], {"test": 2, "train": 3, "rest": -1}, seed=0)
    sets = flite.deal_sentences(list("abcdef"), {"test": 2, "train": 3, "rest": -1}, seed=0)
    assert [len(s) for s in sets.values()] == [2, 3, 1]
    assert sorted(sum(sets.values(), [])) == list("abcdef")


# ----------------------------------------------------------------------------------- LibriSpeech
LIBRI_UTTERANCES = {
    "19-198-0001": "NORTHANGER ABBEY WAS WRITTEN LONG AGO",
    "19-198-0002": "THE HEROINE IS A YOUNG READER",
    "26-495-0001": "A TALE OF TWO CITIES",
    "26-495-0002": "IT WAS THE BEST OF TIMES",
}


@pytest.fixture(scope="module")
def libri_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LibriSpeech-layout corpus: dev-clean with 2 speakers x 2 utterances, flac."""
    root = tmp_path_factory.mktemp("libri") / "Libri Speech"
    for uttid, words in LIBRI_UTTERANCES.items():
        speaker, chapter, _ = uttid.split("-")
        chapter_dir = root / "dev-clean" / speaker / chapter
        chapter_dir.mkdir(parents=True, exist_ok=True)
        wav = chapter_dir / f"{uttid}.wav"
        subprocess.run(
            ["flite", "-voice", "kal16", "-t", words.lower(), "-o", str(wav)], check=True
        )
        subprocess.run(["sox", str(wav), str(chapter_dir / f"{uttid}.flac")], check=True)
        wav.unlink()
        with open(chapter_dir / f"{speaker}-{chapter}.trans.txt", "a", encoding="utf-8") as f:
            f.write(f"{uttid} {words}\n")
    return root


def test_librispeech_data_dir(tmp_path, libri_root):
    recipe = make_recipe(tmp_path, "librispeech")
    env = {**os.environ, "LIBRISPEECH": str(libri_root)}
    result = run_script(recipe, "local/data.sh", "--subsets", "dev-clean", env=env)
    assert result.returncode == 0, result.stderr
    data = recipe / "data" / "dev_clean"
    validate(data)
    assert read_table(data / "text") == LIBRI_UTTERANCES
    assert read_table(data / "utt2spk") == {u: u.split("-")[0] for u in LIBRI_UTTERANCES}
    assert read_table(data / "spk2utt") == {
        "19": "19-198-0001 19-198-0002",
        "26": "26-495-0001 26-495-0002",
    }
    wav_scp = read_table(data / "wav.scp")
    assert wav_scp["26-495-0002"] == str(libri_root / "dev-clean/26/495/26-495-0002.flac")
    assert soundfile.info(wav_scp["19-198-0001"]).format == "FLAC"


@pytest.mark.parametrize("location", ["", "does/not/exist", "empty dir"])
def test_librispeech_missing_corpus_is_a_one_line_error(tmp_path, location):
    recipe = make_recipe(tmp_path, "librispeech")
    if location == "empty dir":
        (tmp_path / location).mkdir()
        location = str(tmp_path / location)
    result = run_script(recipe, "local/data.sh", env={**os.environ, "LIBRISPEECH": location})
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    if location:
        assert f"LIBRISPEECH={location} is missing or empty: set it in db.sh" in line
    else:
        assert "LIBRISPEECH is empty: set it in db.sh" in line


def test_librispeech_errors_name_the_file_and_line(tmp_path, libri_root):
    corpus = tmp_path / "corpus"
    shutil.copytree(libri_root / "dev-clean", corpus / "dev-clean")
    trans = corpus / "dev-clean" / "26" / "495" / "26-495.trans.txt"
    trans.write_text(trans.read_text() + "26-495-0003 NOT RECORDED\n")
    where = re.escape(str(trans))
    with pytest.raises(librispeech.LibriSpeechError, match=f"{where}:3: .*26-495-0003.flac"):
        librispeech.read_chapter(trans)
    trans.write_text("26-495-0001\n")
    with pytest.raises(librispeech.LibriSpeechError, match=f"{where}:1: expected"):
        librispeech.read_chapter(trans)
    missing = librispeech.main(["--corpus_root", str(corpus), "--output_dir", str(tmp_path / "d")])
    assert missing == 1  # only dev-clean exists, the default subsets ask for all seven


def test_flite_runs_without_the_recipes_tcmalloc_preload_only():
    lib = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
    recipe = {"PATH": "/bin", "LD_PRELOAD": lib, "OPUSLM_TCMALLOC_LIB": lib}
    assert flite.flite_env(recipe) == {"PATH": "/bin", "OPUSLM_TCMALLOC_LIB": lib}
    own = {**recipe, "LD_PRELOAD": "/opt/libjemalloc.so"}  # the user's preload stays
    assert flite.flite_env(own) == own
    assert flite.flite_env({"LD_PRELOAD": lib}) == {"LD_PRELOAD": lib}  # not set by path.sh

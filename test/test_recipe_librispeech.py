"""The LibriSpeech recipe end to end on a fake corpus in LibriSpeech layout, spoken by flite.

The recipe runs through its own run.sh and local/data.sh in a copy made by the template's
setup.sh (a path with a space), with conf/test's tiny tokenizers and Llama body in place of
SmolLM2: stages 1-5, then 6-8 (a few training steps), then (`make bench`: -m slow) 9-10 on the two
test-clean utterances. Stages 9-10 are the template's, which the mini recipe's smoke test runs in
the default suite.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_recipe_data import make_recipe, read_table, validate

# subset -> uttid -> transcript; the speaker and chapter are the uttid's first two fields.
FAKE_LIBRISPEECH = {
    "train-clean-100": {
        "19-198-0001": "NORTHANGER ABBEY WAS WRITTEN LONG AGO",
        "19-198-0002": "THE HEROINE IS A YOUNG READER",
        "19-198-0003": "SHE LOVED STORIES OF OLD CASTLES",
        "19-198-0004": "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        "26-495-0001": "A TALE OF TWO CITIES",
        "26-495-0002": "IT WAS THE BEST OF TIMES",
        "26-495-0003": "IT WAS THE AGE OF WISDOM",
        "26-495-0004": "THE COACH ROLLED ON THROUGH THE NIGHT",
    },
    "dev-clean": {
        "84-121123-0001": "THE RIVER RAN QUIETLY PAST THE MILL",
        "84-121123-0002": "A BELL RANG FROM THE OLD TOWER",
    },
    "test-clean": {
        "1089-134686-0001": "HE HOPED THERE WOULD BE STEW FOR DINNER",
        "1089-134686-0002": "THE LAMP LIT A WARM CORNER OF THE ROOM",
    },
}
# The training text holds every letter (a pangram): the char tokenizer is trained on it alone.
# One flite voice per speaker, so the TTS prompts differ in voice between speakers.
VOICES = {"19": "slt", "26": "kal16", "84": "rms", "1089": "awb"}
SPEECH_SETS = ("train_clean_100", "dev_clean", "test_clean")
MODEL = Path("exp") / "speechlm_test_anneal"

# The recipe's run.sh with conf/test in place of SmolLM2 and the 960 h sets: the fake corpus has
# one training subset (so no train_960) and one test set; CPU only, one job per step.
RUN = (
    "./run.sh --tokenizers builtin --ngpu 0 --nj 1 --train_set train_clean_100"
    " --test_sets test_clean --tokenizer_config conf/test/tokenizer.yaml"
    " --train_config conf/test/train.yaml --anneal_config conf/test/anneal.yaml"
    " --decode_config conf/test/decode.yaml --tag test"
).split()


def write_fake_librispeech(root: Path) -> None:
    """<root>/<subset>/<speaker>/<chapter>/{<uttid>.flac, <speaker>-<chapter>.trans.txt}."""
    for subset, utterances in FAKE_LIBRISPEECH.items():
        for uttid, words in utterances.items():
            speaker, chapter, _ = uttid.split("-")
            chapter_dir = root / subset / speaker / chapter
            chapter_dir.mkdir(parents=True, exist_ok=True)
            wav = chapter_dir / f"{uttid}.wav"
            subprocess.run(
                ["flite", "-voice", VOICES[speaker], "-t", words.lower(), "-o", str(wav)],
                check=True,
            )
            subprocess.run(["sox", str(wav), str(chapter_dir / f"{uttid}.flac")], check=True)
            wav.unlink()
            with open(chapter_dir / f"{speaker}-{chapter}.trans.txt", "a", encoding="utf-8") as f:
                f.write(f"{uttid} {words}\n")


def run_stages(recipe: Path, first: int, last: int) -> str:
    """./run.sh --stage first --stop_stage last; its log (stderr)."""
    result = subprocess.run(
        [*RUN, "--stage", str(first), "--stop_stage", str(last)],
        cwd=recipe,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in range(first, last + 1):
        assert f"Stage {stage}: " in result.stderr
    return result.stderr


# In the default suite: about 60 s on 2 cores (flite corpus 10 s, stages 1-8 the rest).
@pytest.mark.timeout(600)
def test_librispeech_recipe_stages_1_to_8_on_a_fake_corpus(tmp_path):
    run_librispeech_recipe(tmp_path, last_stage=8)


# Stages 9-10 add about 75 s; the smoke recipe covers them in the default suite.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_librispeech_recipe_stages_1_to_10_on_a_fake_corpus(tmp_path):
    run_librispeech_recipe(tmp_path, last_stage=10)


def run_librispeech_recipe(tmp_path: Path, last_stage: int) -> None:
    """Stages 1-5, 6-8 and (last_stage 10) 9-10 of the recipe on the fake corpus, checked."""
    corpus = tmp_path / "Libri Speech"
    write_fake_librispeech(corpus)
    recipe = make_recipe(tmp_path, "librispeech", linked=("local", "conf", "run.sh"))
    # db.sh is this machine's: where the corpus is and which subsets it has.
    (recipe / "db.sh").write_text(
        f'LIBRISPEECH="{corpus}"\nsubsets="train-clean-100 dev-clean test-clean"\n',
        encoding="utf-8",
    )

    run_stages(recipe, 1, 5)
    for name in SPEECH_SETS:
        subset = name.replace("_", "-")
        validate(recipe / "data" / name)
        assert read_table(recipe / "data" / name / "text") == FAKE_LIBRISPEECH[subset]
        validate(recipe / "dump" / "raw" / name)
        for task in ("asr", "tts"):
            manifest = recipe / "exp" / "manifests" / f"{task}_{name}" / "data.json"
            assert manifest.is_file(), manifest
    assert not (recipe / "data" / "train_960").exists()  # one training subset: nothing combined
    # The joint vocabulary from conf/test/tokenizer.yaml: 16 semantic units, 2 x 16 codec codes.
    token_list = json.loads((recipe / "data" / "token_list.json").read_text())
    assert (token_list["num_codebooks"], token_list["codebook_size"]) == (2, 16)
    semantic_start, semantic_end = token_list["ranges"]["semantic"]
    assert semantic_end - semantic_start == 16

    log = run_stages(recipe, 6, 8)
    assert "no --base_lm_config" in log
    # The last step of each config is checkpointed: 4 of pre-training, 2 of annealing.
    for model, last_step in ((MODEL.parent / "speechlm_test", 4), (MODEL, 2)):
        assert (recipe / model / ".done").is_file()
        checkpoint = recipe / model / "checkpoints" / f"step_{last_step}"
        assert (checkpoint / "model.safetensors").is_file(), sorted(checkpoint.parent.iterdir())

    if last_stage < 10:
        return
    run_stages(recipe, 9, 10)
    asr, tts = (
        json.loads((recipe / MODEL / f"decode_{task}_test_clean" / "score.json").read_text())
        for task in ("asr", "tts")
    )
    assert (asr["num_utts"], asr["num_ref_words"], asr["num_missing_hyps"]) == (2, 17, 0), asr
    assert (tts["num_utts"], tts["num_missing_syn"]) == (2, 0), tts
    results = (recipe / MODEL / "RESULTS.md").read_text()
    assert "## asr: test_clean" in results
    assert "## tts: test_clean" in results

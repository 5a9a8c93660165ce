"""Checks that the committed demo corpus in data/demo_corpus is complete.

The corpus is read as committed; nothing is regenerated. The expected class
counts come from ``manifest.json`` (written by ``tools/make_corpus.py``) and
are compared with the files actually present.
"""

import json
import pathlib
import wave

import numpy as np
import pytest

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "data" / "demo_corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
TASKS = sorted(MANIFEST["tasks"])
SPLITS = ("train", "test")
MAX_BYTES = 20_000_000
# Every clip must be louder than -50 dBFS RMS.
RMS_FLOOR = 10 ** (-50 / 20)


def wav_files(task, split, label):
    """Sorted WAV files of one class in one split of one task."""
    return sorted((CORPUS / task / split / label).glob("*.wav"))


def test_expected_tasks_present():
    assert {"keywords", "speaker", "instrument"} <= set(TASKS)
    on_disk = {path.name for path in CORPUS.iterdir() if path.is_dir()}
    assert on_disk == set(TASKS)


def test_manifest_format_is_16k_mono_16bit_one_second():
    assert MANIFEST["sample_rate"] == 16000
    assert MANIFEST["clip_samples"] == 16000
    assert MANIFEST["channels"] == 1
    assert MANIFEST["sample_width_bytes"] == 2


@pytest.mark.parametrize("task", TASKS)
def test_classes_and_counts_match_manifest(task):
    spec = MANIFEST["tasks"][task]
    classes = spec["classes"]
    assert len(classes) >= (10 if task == "keywords" else 8)
    for split in SPLITS:
        split_dir = CORPUS / task / split
        assert sorted(p.name for p in split_dir.iterdir()) == sorted(classes)
        assert set(spec["counts"][split]) == set(classes)
        for label in classes:
            expected = spec["counts"][split][label]
            assert expected > 0
            class_dir = split_dir / label
            assert all(p.suffix == ".wav" for p in class_dir.iterdir())
            assert len(wav_files(task, split, label)) == expected


@pytest.mark.parametrize("task", TASKS)
def test_every_clip_is_one_second_16k_mono_16bit_and_audible(task):
    for split in SPLITS:
        for label in MANIFEST["tasks"][task]["classes"]:
            for path in wav_files(task, split, label):
                with wave.open(str(path)) as reader:
                    assert reader.getframerate() == 16000, path
                    assert reader.getnchannels() == 1, path
                    assert reader.getsampwidth() == 2, path
                    assert reader.getnframes() == 16000, path
                    frames = reader.readframes(reader.getnframes())
                samples = np.frombuffer(frames, "<i2") / 32768.0
                assert samples.size == 16000, path
                rms = np.sqrt(np.mean(samples ** 2))
                assert rms > RMS_FLOOR, f"{path} is nearly silent"


def test_total_size_within_budget():
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert total <= MAX_BYTES

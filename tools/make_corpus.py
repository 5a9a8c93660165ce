#!/usr/bin/env python3
"""Generate the bundled multi-task demo corpus in ``data/demo_corpus``.

The corpus holds three small classification tasks in the spirit of Table 1 of
the LEAF paper, all as 1 s, 16 kHz, mono, 16-bit PCM WAV clips:

* ``keywords``: ten spoken command words, many synthetic voices, speeds and
  pitches, placed at a random time in the second and mixed with background
  noise (white, pink, brown, mains hum or speech babble) at a random SNR;
  a quarter of the espeak-ng voice variants are kept for the test split.
* ``speaker``: speaker identification among ten synthetic voices reading
  English sentences; the test split uses sentences never seen in training.
* ``instrument``: instrument family of single notes (random program of the
  family, pitch, velocity and duration) rendered by FluidSynth from the
  FluidR3_GM sampled soundfont.

The script is only needed to regenerate the data; the corpus itself is
committed. Output is deterministic: every random choice comes from a seeded
``numpy.random.Generator`` and the external tools are deterministic given
their arguments. Regenerate with::

    python tools/make_corpus.py            # writes data/demo_corpus

External programs (Debian 12 "bookworm" packages, versions used):

* espeak-ng 1.51+dfsg-10+deb12u2 (``espeak-ng``, GPL-3.0-or-later)
* flite 2.2-5 (``flite``, BSD-like CMU licence)
* fluidsynth 2.3.1-2 (``fluidsynth``, LGPL-2.1-or-later)
* fluid-soundfont-gm 3.1-5.3 (``/usr/share/sounds/sf2/FluidR3_GM.sf2``, MIT)

Install them with ``apt-get install espeak-ng flite fluidsynth
fluid-soundfont-gm``. Python needs only the standard library and numpy.
"""

import argparse
import csv
import io
import json
import pathlib
import shutil
import subprocess
import tempfile
import wave

import numpy as np

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE
SOUNDFONT = pathlib.Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Number of clips per class in each split.
COUNTS = {
    "keywords": {"train": 20, "test": 5},
    "speaker": {"train": 10, "test": 4},
    "instrument": {"train": 18, "test": 5},
}
SEEDS = {"keywords": 1001, "speaker": 2002, "instrument": 3003}

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop",
            "go")

# English accents of espeak-ng; each voice is an accent plus a variant.
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp",
                  "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# espeak-ng voice variants, leaving out the whispered, robotic and
# deliberately distorted ones.
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "adam", "Alex", "Andy", "Annie", "aunty", "belinda", "benjamin", "boris",
    "caleb", "david", "ed", "edward", "grandma", "grandpa", "iven", "john",
    "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert",
    "steph", "travis", "victor", "zac",
)
# Fraction of espeak-ng variants used only in the keyword test split.
HELD_OUT_VARIANT_FRACTION = 0.25
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
# Mean F0 ranges (Hz) drawn for flite voices; rms ignores this setting.
FLITE_F0_RANGE = {"kal": (85, 140), "kal16": (85, 140), "awb": (85, 140),
                  "rms": (85, 140), "slt": (150, 230)}

# Speakers: name -> (engine, voice, words per minute or duration stretch,
# espeak pitch or flite mean F0).
SPEAKERS = {
    "awb": ("flite", "awb", 1.0, 110),
    "rms": ("flite", "rms", 1.0, 100),
    "slt": ("flite", "slt", 1.0, 175),
    "kal": ("flite", "kal16", 1.0, 105),
    "us_m3": ("espeak", "en-us+m3", 160, 40),
    "rp_f2": ("espeak", "en-gb-x-rp+f2", 150, 55),
    "scot_m7": ("espeak", "en-gb-scotland+m7", 140, 35),
    "carib_f4": ("espeak", "en-029+f4", 170, 60),
    "us_klatt2": ("espeak", "en-us+klatt2", 155, 50),
    "lanc_m1": ("espeak", "en-gb-x-gbclan+m1", 165, 45),
}

# Sentences read in the speaker task (train: first 30, test: last 10) and
# used as babble noise in the keyword task.
SENTENCES = (
    "The old bridge over the river was painted green last summer.",
    "Please bring the blue folder to the meeting on Thursday.",
    "A cold wind blew across the empty harbour at dawn.",
    "My brother keeps three small turtles in a glass tank.",
    "The bakery on the corner sells fresh bread every morning.",
    "She wrote the address on the back of an envelope.",
    "We watched the storm clouds gather above the hills.",
    "The children laughed as the puppy chased its own tail.",
    "He forgot his umbrella and walked home in the rain.",
    "The library closes early on public holidays.",
    "Heavy trucks rumbled along the narrow mountain road.",
    "Turn the handle slowly or the valve will start to leak.",
    "The orchestra tuned their instruments before the concert.",
    "Bright lanterns hung from every window in the village.",
    "Our teacher asked us to read the first chapter twice.",
    "The farmer sold apples and pears at the weekly market.",
    "A tiny spider spun its web between two flower pots.",
    "The pilot announced that we would land in ten minutes.",
    "Fresh snow covered the garden and the quiet street.",
    "They painted a huge mural on the side of the school.",
    "The museum displays fossils found near the coast.",
    "Keep the receipt in case you need to return the shoes.",
    "The clock in the hallway chimes every quarter hour.",
    "Wild geese flew south over the frozen lake.",
    "He measured the flour carefully before mixing the dough.",
    "The train was delayed because of a signal failure.",
    "Several boats were tied up along the wooden pier.",
    "She practised the violin for an hour each evening.",
    "The workers repaired the roof before winter arrived.",
    "A loud whistle signalled the end of the football match.",
    "The gardener trimmed the hedges around the old house.",
    "Our neighbours planted tomatoes and beans in the yard.",
    "The detective examined the muddy footprints by the door.",
    "Thick fog rolled in from the sea during the night.",
    "The cat slept on the warm windowsill all afternoon.",
    "Students gathered in the hall to hear the announcement.",
    "The chef sliced the onions and fried them in butter.",
    "A red kite circled high above the valley.",
    "The shop assistant wrapped the gift in silver paper.",
    "We camped beside a stream at the edge of the forest.",
)
TRAIN_SENTENCES = 30

# Instrument families -> (General MIDI programs, 0-based; MIDI pitch range).
# Both splits draw from every program; test notes are new draws of program,
# pitch, velocity, duration and onset.
INSTRUMENT_FAMILIES = {
    "bass": ((32, 33, 34, 35, 36, 37, 38, 39), (28, 55)),
    "brass": ((56, 57, 58, 59, 60, 61, 62, 63), (45, 77)),
    "flute": ((72, 73, 74, 75, 76, 77, 78, 79), (60, 93)),
    "guitar": ((24, 25, 26, 27, 28, 29, 30), (40, 76)),
    "keyboard": ((0, 1, 2, 3, 4, 5, 6, 7), (36, 96)),
    "mallet": ((8, 9, 10, 11, 12, 13, 14, 15), (60, 96)),
    "reed": ((64, 65, 66, 67, 68, 69, 70, 71), (45, 81)),
    "string": ((40, 41, 42, 43, 44, 48, 49, 50), (36, 84)),
}
RENDER_RATE = 48000
# Each note gets its own slot in one long MIDI file; the first second of a
# slot becomes a clip and the rest lets the release die away.
NOTE_SLOT_S = 2.0


def resample(x, rate_in, rate_out):
    """Band-limited resampling of a 1-D signal with the FFT.

    The signal is zero-padded on both sides before the transform so that the
    implicit circular extension does not leak one end into the other.
    ``rate_in`` may be fractional, which lets the caller change speed and
    pitch together (like a tape played at another speed).
    """
    pad = 2048
    x = np.asarray(x, np.float64)
    padded = np.pad(x, pad)
    n_in = padded.size
    n_out = int(round(n_in * rate_out / rate_in))
    spectrum = np.fft.rfft(padded)
    bins = n_out // 2 + 1
    if bins <= spectrum.size:
        spectrum = spectrum[:bins]
    else:
        spectrum = np.pad(spectrum, (0, bins - spectrum.size))
    y = np.fft.irfft(spectrum, n=n_out) * (n_out / n_in)
    start = int(round(pad * rate_out / rate_in))
    return y[start:start + int(round(x.size * rate_out / rate_in))]


def read_wav(data):
    """Decode 16-bit PCM WAV bytes into (float samples in [-1, 1], rate)."""
    with wave.open(io.BytesIO(data)) as reader:
        if reader.getsampwidth() != 2:
            raise ValueError("expected 16-bit PCM WAV")
        frames = reader.readframes(reader.getnframes())
        channels = reader.getnchannels()
        rate = reader.getframerate()
    samples = np.frombuffer(frames, "<i2").astype(np.float64) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1), rate


def write_wav(path, x):
    """Write a float signal in [-1, 1] as 16-bit mono PCM WAV at 16 kHz."""
    pcm = np.clip(np.round(np.asarray(x) * 32767.0), -32768, 32767)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(pcm.astype("<i2").tobytes())


def run_to_wav(command, out_path):
    """Run an external synthesiser that writes ``out_path``; return samples."""
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return read_wav(out_path.read_bytes())


def espeak(text, voice, words_per_minute, pitch, workdir):
    """Speak ``text`` with espeak-ng; return (samples, sample rate)."""
    out = workdir / "espeak.wav"
    command = ["espeak-ng", "-v", voice, "-s", str(int(words_per_minute)),
               "-p", str(int(pitch)), "-w", str(out), text]
    return run_to_wav(command, out)


def flite(text, voice, stretch, mean_f0, workdir):
    """Speak ``text`` with flite; return (samples, sample rate)."""
    out = workdir / "flite.wav"
    command = ["flite", "-voice", voice,
               "--setf", f"duration_stretch={stretch:.3f}",
               "--setf", f"int_f0_target_mean={mean_f0:.1f}",
               "-t", text, "-o", str(out)]
    return run_to_wav(command, out)


def frame_rms(x, frame=160):
    """RMS of consecutive non-overlapping frames (10 ms at 16 kHz)."""
    usable = x[:x.size // frame * frame].reshape(-1, frame)
    return np.sqrt(np.mean(usable ** 2, axis=1) + 1e-20)


def trim_silence(x, threshold_db=-40.0, frame=160):
    """Cut leading and trailing frames quieter than the loudest by 40 dB."""
    levels = 20 * np.log10(frame_rms(x, frame))
    active = np.flatnonzero(levels > levels.max() + threshold_db)
    start = max(active[0] - 1, 0) * frame
    stop = min((active[-1] + 2) * frame, x.size)
    return x[start:stop]


def normalise_peak(x, peak_db):
    """Scale ``x`` so that its absolute peak sits at ``peak_db`` dBFS."""
    return x * (10 ** (peak_db / 20) / np.max(np.abs(x)))


def coloured_noise(rng, n, exponent):
    """Gaussian noise with power spectrum proportional to 1/f**exponent."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=n)
    return noise / np.sqrt(np.mean(noise ** 2))


def mains_hum(rng, n):
    """Mains hum (50 or 60 Hz with harmonics) over a little pink noise."""
    t = np.arange(n) / SAMPLE_RATE
    base = rng.choice([50.0, 60.0])
    hum = sum(rng.uniform(0.2, 1.0) / k
              * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
              for k in range(1, 8))
    hum = hum / np.sqrt(np.mean(hum ** 2))
    return hum + 0.3 * coloured_noise(rng, n, 1.0)


class Babble:
    """A pool of sentences by random voices, summed into speech babble."""

    def __init__(self, rng, workdir, size=16):
        self.pool = []
        for _ in range(size):
            text = SENTENCES[rng.integers(len(SENTENCES))]
            voice = (f"{rng.choice(ESPEAK_ACCENTS)}+"
                     f"{rng.choice(ESPEAK_VARIANTS)}")
            x, rate = espeak(text, voice, rng.integers(130, 200),
                             rng.integers(20, 80), workdir)
            self.pool.append(resample(trim_silence(x), rate, SAMPLE_RATE))

    def __call__(self, rng, n, talkers=4):
        """Sum ``talkers`` random one-second excerpts of the pool."""
        mix = np.zeros(n)
        for index in rng.choice(len(self.pool), talkers, replace=False):
            source = self.pool[index]
            start = rng.integers(source.size - n)
            mix += source[start:start + n]
        return mix / np.sqrt(np.mean(mix ** 2))


def mix_at_snr(signal, signal_rms, noise, snr_db):
    """Add unit-RMS ``noise`` so that signal RMS / noise RMS is ``snr_db``."""
    return signal + noise * signal_rms / 10 ** (snr_db / 20)


def split_variants(rng):
    """Split espeak-ng variants into disjoint train and test voice sets."""
    order = rng.permutation(len(ESPEAK_VARIANTS))
    n_test = int(round(len(order) * HELD_OUT_VARIANT_FRACTION))
    test = sorted(ESPEAK_VARIANTS[i] for i in order[:n_test])
    train = sorted(ESPEAK_VARIANTS[i] for i in order[n_test:])
    return {"train": train, "test": test}


def speak_keyword(rng, word, variants, workdir):
    """Synthesise one keyword with a random voice; return (samples, info)."""
    tape = rng.uniform(0.92, 1.08)
    if rng.random() < 0.65:
        voice = f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(variants)}"
        wpm, pitch = rng.integers(110, 230), rng.integers(15, 86)
        x, rate = espeak(word, voice, wpm, pitch, workdir)
        info = f"espeak-ng {voice} speed={wpm} pitch={pitch}"
    else:
        voice = str(rng.choice(FLITE_VOICES))
        stretch = rng.uniform(0.8, 1.3)
        mean_f0 = rng.uniform(*FLITE_F0_RANGE[voice])
        x, rate = flite(word, voice, stretch, mean_f0, workdir)
        info = (f"flite {voice} stretch={stretch:.2f} "
                f"f0={mean_f0:.0f}")
    speech = resample(trim_silence(x), rate * tape, SAMPLE_RATE)
    return speech, f"{info} tape={tape:.3f}"


def keyword_clip(rng, word, variants, babble, workdir):
    """One keyword clip: word at a random time, noise at a random SNR."""
    while True:
        speech, info = speak_keyword(rng, word, variants, workdir)
        if speech.size <= CLIP_SAMPLES - 320:
            break
    start = rng.integers(CLIP_SAMPLES - speech.size + 1)
    clip = np.zeros(CLIP_SAMPLES)
    clip[start:start + speech.size] = speech
    kind = str(rng.choice(["white", "pink", "brown", "hum", "babble"]))
    if kind == "babble":
        noise = babble(rng, CLIP_SAMPLES)
    elif kind == "hum":
        noise = mains_hum(rng, CLIP_SAMPLES)
    else:
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        noise = coloured_noise(rng, CLIP_SAMPLES, exponent)
    snr = rng.uniform(5.0, 20.0)
    speech_rms = np.sqrt(np.mean(speech ** 2))
    peak = rng.uniform(-12.0, -1.0)
    clip = normalise_peak(mix_at_snr(clip, speech_rms, noise, snr), peak)
    return clip, (f"{info} onset={start / SAMPLE_RATE:.3f}s noise={kind} "
                  f"snr={snr:.1f}dB")


def make_keywords(rng, workdir):
    """Yield (split, label, clip, info) for the keyword-spotting task."""
    variants = split_variants(rng)
    babble = Babble(rng, workdir)
    for split in ("train", "test"):
        for word in KEYWORDS:
            for _ in range(COUNTS["keywords"][split]):
                clip, info = keyword_clip(rng, word, variants[split], babble,
                                          workdir)
                yield split, word, clip, info


def active_window(rng, speech, min_active=0.6, tries=50):
    """Pick a 1 s window of ``speech`` in which most frames carry speech."""
    levels = 20 * np.log10(frame_rms(speech))
    active = levels > levels.max() - 35.0
    frames = CLIP_SAMPLES // 160
    best_start, best_fraction = 0, -1.0
    for _ in range(tries):
        first = rng.integers(active.size - frames + 1)
        fraction = active[first:first + frames].mean()
        if fraction > best_fraction:
            best_start, best_fraction = first * 160, fraction
        if fraction >= min_active:
            break
    return speech[best_start:best_start + CLIP_SAMPLES], best_start


def speaker_clip(rng, name, sentence_ids, workdir):
    """One speaker clip: a 1 s excerpt of a sentence read by ``name``."""
    engine, voice, speed, pitch = SPEAKERS[name]
    sentence = int(rng.choice(sentence_ids))
    text = SENTENCES[sentence]
    tape = rng.uniform(0.95, 1.05)
    if engine == "espeak":
        wpm = speed * rng.uniform(0.85, 1.15)
        x, rate = espeak(text, voice, wpm, pitch + rng.integers(-10, 11),
                         workdir)
    else:
        x, rate = flite(text, voice, speed * rng.uniform(0.85, 1.15),
                        pitch * rng.uniform(0.88, 1.12), workdir)
    speech = resample(trim_silence(x), rate * tape, SAMPLE_RATE)
    excerpt, start = active_window(rng, speech)
    noise = coloured_noise(rng, CLIP_SAMPLES, rng.choice([0.0, 1.0, 2.0]))
    snr = rng.uniform(10.0, 25.0)
    clip = mix_at_snr(excerpt, np.sqrt(np.mean(excerpt ** 2)), noise, snr)
    clip = normalise_peak(clip, rng.uniform(-12.0, -1.0))
    return clip, (f"{engine} {voice} sentence={sentence} "
                  f"offset={start / SAMPLE_RATE:.2f}s tape={tape:.3f} "
                  f"snr={snr:.1f}dB")


def make_speaker(rng, workdir):
    """Yield (split, label, clip, info) for the speaker-identification task."""
    sentences = {"train": np.arange(TRAIN_SENTENCES),
                 "test": np.arange(TRAIN_SENTENCES, len(SENTENCES))}
    for split in ("train", "test"):
        for name in SPEAKERS:
            for _ in range(COUNTS["speaker"][split]):
                clip, info = speaker_clip(rng, name, sentences[split],
                                          workdir)
                yield split, name, clip, info


def variable_length(value):
    """Encode a non-negative integer as a MIDI variable-length quantity."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(groups))


def midi_file(notes):
    """Build a format-0 MIDI file with one note per ``NOTE_SLOT_S`` slot.

    ``notes`` holds (program, pitch, velocity, onset_ms, duration_ms). The
    tempo makes one tick one millisecond. Every slot begins by silencing
    the previous note and selecting the next program on channel 0.
    """
    events = []
    for slot, (program, pitch, velocity, onset, duration) in enumerate(notes):
        begin = int(slot * NOTE_SLOT_S * 1000)
        events.append((begin, 0, bytes([0xB0, 120, 0])))
        events.append((begin, 1, bytes([0xC0, program])))
        events.append((begin + onset, 2, bytes([0x90, pitch, velocity])))
        events.append((begin + onset + duration, 3, bytes([0x80, pitch, 0])))
    end = int(len(notes) * NOTE_SLOT_S * 1000)
    events.append((end, 4, bytes([0xB0, 120, 0])))
    track = bytearray(b"\x00\xFF\x51\x03" + (1000 * 480).to_bytes(3, "big"))
    now = 0
    for time, _, message in sorted(events):
        track += variable_length(time - now) + message
        now = time
    track += b"\x00\xFF\x2F\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + bytes([0, 0, 0, 1, 1, 224])
    return header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track)


def render_notes(notes, workdir):
    """Render notes with FluidSynth; return one 1 s, 16 kHz clip per note."""
    midi = workdir / "notes.mid"
    rendered = workdir / "notes.wav"
    midi.write_bytes(midi_file(notes))
    command = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5",
               "-r", str(RENDER_RATE), "-T", "wav", "-O", "s16",
               "-F", str(rendered), str(SOUNDFONT), str(midi)]
    audio, rate = run_to_wav(command, rendered)
    slot = int(NOTE_SLOT_S * rate)
    clips = []
    for index in range(len(notes)):
        segment = audio[index * slot:index * slot + rate]
        clips.append(resample(segment, rate, SAMPLE_RATE))
    return clips


def draw_note(rng, programs, pitch_range):
    """Draw (program, pitch, velocity, onset_ms, duration_ms) for one note."""
    low, high = pitch_range
    return (int(rng.choice(programs)), int(rng.integers(low, high + 1)),
            int(rng.integers(40, 128)), int(rng.integers(0, 80)),
            int(rng.integers(300, 900)))


def make_instrument(rng, workdir):
    """Yield (split, label, clip, info) for the instrument-family task.

    Some programs of the soundfont have no samples for part of the keyboard
    (a tuba does not play high notes); notes that render silent are drawn
    again until every clip sounds.
    """
    for split in ("train", "test"):
        specs = [(family, programs, span)
                 for family, (programs, span) in INSTRUMENT_FAMILIES.items()
                 for _ in range(COUNTS["instrument"][split])]
        notes = [draw_note(rng, programs, span) for _, programs, span in specs]
        clips = render_notes(notes, workdir)
        pending = [i for i, clip in enumerate(clips)
                   if np.max(np.abs(clip)) < 1e-3]
        while pending:
            for i in pending:
                notes[i] = draw_note(rng, *specs[i][1:])
            redrawn = render_notes([notes[i] for i in pending], workdir)
            for i, clip in zip(pending, redrawn):
                clips[i] = clip
            pending = [i for i in pending if np.max(np.abs(clips[i])) < 1e-3]
        for (label, _, _), note, clip in zip(specs, notes, clips):
            program, pitch, velocity, onset, duration = note
            clip = normalise_peak(clip, rng.uniform(-12.0, -1.0))
            yield split, label, clip, (
                f"FluidR3_GM program={program} pitch={pitch} "
                f"velocity={velocity} onset={onset}ms duration={duration}ms")


TASKS = {"keywords": make_keywords, "speaker": make_speaker,
         "instrument": make_instrument}


def main():
    """Generate every task, then write ``manifest.json`` and metadata."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path,
                        default=REPO_ROOT / "data" / "demo_corpus",
                        help="output directory (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS),
                        default=list(TASKS), help="tasks to generate")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="clips per class in train (default: COUNTS)")
    parser.add_argument("--test-per-class", type=int, default=None,
                        help="clips per class in test (default: COUNTS)")
    args = parser.parse_args()
    out = args.out
    custom = (sorted(args.tasks) != sorted(TASKS)
              or args.train_per_class is not None
              or args.test_per_class is not None)
    if custom and out.resolve() == (REPO_ROOT / "data" / "demo_corpus"):
        parser.error("--tasks and --*-per-class make another corpus than "
                     "the bundled one: give it its own --out folder")
    for task in args.tasks:
        for split in ("train", "test"):
            count = getattr(args, f"{split}_per_class")
            if count is not None:
                if count < 1:
                    parser.error(f"--{split}-per-class must be >= 1")
                COUNTS[task][split] = count
    manifest = {"sample_rate": SAMPLE_RATE, "clip_samples": CLIP_SAMPLES,
                "channels": 1, "sample_width_bytes": 2,
                "generator": "tools/make_corpus.py", "tasks": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        for task in args.tasks:
            make = TASKS[task]
            shutil.rmtree(out / task, ignore_errors=True)
            counts = {"train": {}, "test": {}}
            for split, label, clip, info in make(
                    np.random.default_rng(SEEDS[task]), workdir):
                index = counts[split].get(label, 0)
                counts[split][label] = index + 1
                relative = f"{task}/{split}/{label}/{label}_{index:03d}.wav"
                write_wav(out / relative, clip)
                rows.append((relative, info))
            manifest["tasks"][task] = {
                "classes": sorted(counts["train"]), "counts": counts}
            print(f"{task}: {sum(counts['train'].values())} train, "
                  f"{sum(counts['test'].values())} test clips", flush=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    with open(out / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "source"))
        writer.writerows(rows)


if __name__ == "__main__":
    main()

"""CTALFeatureExtractor: parity with librosa's computation of the authors' recipe (paper section 3.1.1), batching,
frame counts, input handling and errors."""

import importlib.util
import json
import logging
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
import soxr
import torch

from ctal_hf import CTALFeatureExtractor


# librosa warns when n_fft exceeds the audio; those short lengths are tested on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:n_fft=.* is too large:UserWarning")

SR = 16000
ROOT = Path(__file__).resolve().parents[3]


def load_benchmark_module():
    """`benchmarks/feature_extraction.py`, which holds the librosa computation of the recipe (`librosa_features`)."""
    spec = importlib.util.spec_from_file_location(
        "ctal_feature_benchmark", ROOT / "benchmarks" / "feature_extraction.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def librosa_features():
    """librosa reference, warmed up once: its first call compiles numba code (~20 s on a fresh machine)."""
    function = load_benchmark_module().librosa_features
    function(make_audio(4000), CTALFeatureExtractor())
    return function


@pytest.fixture(scope="module")
def extractor():
    return CTALFeatureExtractor()


def make_audio(num_samples: int, seed: int = 0, rate: int = SR) -> np.ndarray:
    """Tone + chirp + white noise (float64): every mel band has energy, so CMVN divides by a real std."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / rate
    chirp = np.sin(2 * np.pi * (80 * t + 1500 * t**2))
    return 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * chirp + 0.05 * rng.standard_normal(num_samples)


def features_of(extractor, audio, **kwargs) -> np.ndarray:
    return extractor(audio, sampling_rate=SR, **kwargs)["audio_features"][0]


def test_defaults_are_the_authors_recipe(extractor):
    # preprocess/audio.py of the original code: 'mel' features with delta and CMVN at 16 kHz.
    assert (extractor.sampling_rate, extractor.num_mel_bins, extractor.feature_size) == (16000, 80, 160)
    assert (extractor.win_length, extractor.hop_length, extractor.n_fft) == (800, 200, 2048)  # 50 ms / 12.5 ms
    assert (extractor.window_type, extractor.center, extractor.pad_mode, extractor.power) == (
        "hann",
        True,
        "reflect",
        2.0,
    )
    assert (extractor.mel_scale, extractor.mel_norm, extractor.f_min, extractor.f_max) == (
        "slaney",
        "slaney",
        0.0,
        8000.0,
    )
    assert (extractor.log_offset, extractor.delta_width, extractor.do_cmvn, extractor.cmvn_eps) == (
        1e-6,
        9,
        True,
        1e-16,
    )
    assert extractor.max_frames == 3000
    assert extractor.model_input_names == ["audio_features", "audio_attention_mask"]
    np.testing.assert_array_equal(
        extractor.mel_filters.T, librosa.filters.mel(sr=SR, n_fft=2048, n_mels=80, fmax=8000)
    )


# 1600 samples is the shortest giving 9 frames (librosa's delta needs width <= T); 1600-2047 are shorter than n_fft.
# With exactly 9 frames, the 'interp' delta is the same on every frame: librosa's CMVN of it is rounding noise (ours is
# 0, see test_constant_dimensions_normalise_to_zero), so CMVN is compared from 10 frames on.
@pytest.mark.parametrize(
    "num_samples, do_cmvn",
    [(1600, False)] + [(n, cmvn) for n in (1801, 2047, 2048, 5000, 16000, 40123) for cmvn in (False, True)],
)
def test_parity_with_librosa(librosa_features, num_samples, do_cmvn):
    extractor = CTALFeatureExtractor(do_cmvn=do_cmvn)
    audio = make_audio(num_samples, seed=num_samples)
    ours = features_of(extractor, audio)
    theirs = librosa_features(audio, extractor)
    assert ours.shape == theirs.shape == (1 + num_samples // 200, 160)
    assert np.abs(ours - theirs).max() <= 1e-4  # measured: ~2e-7, the float32 rounding of the output


@pytest.mark.parametrize(
    "recipe",
    [
        {"win_length": 400, "hop_length": 160, "n_fft": 400},  # the 25 ms / 10 ms variant of the original config
        {"pad_mode": "constant"},  # librosa >= 0.10's default padding
        {"center": False},
        {"window_type": "hamming", "mel_scale": "htk", "mel_norm": None, "power": 1.0, "delta_width": 5},
    ],
)
def test_other_recipes_match_librosa(librosa_features, recipe):
    extractor = CTALFeatureExtractor(**recipe)
    audio = make_audio(12345)
    ours = features_of(extractor, audio)
    assert len(ours) == extractor.num_frames(12345)
    assert np.abs(ours - librosa_features(audio, extractor)).max() <= 1e-4


def test_audio_shorter_than_the_reflect_pad(librosa_features):
    # 800 samples (one window) < n_fft // 2 = 1024: the padding reflects several times, as numpy/librosa do;
    # 5 frames < delta_width = 9: every frame gets the least-squares slope over the utterance, which is librosa's
    # delta with width = T (= 5). (No CMVN: that delta is constant over time, see test_parity_with_librosa.)
    audio = make_audio(800)
    ours = features_of(CTALFeatureExtractor(do_cmvn=False), audio)
    assert np.abs(ours - librosa_features(audio, CTALFeatureExtractor(delta_width=5, do_cmvn=False))).max() <= 1e-4


def test_delta_of_an_even_short_utterance_is_the_least_squares_slope(extractor):
    audio = make_audio(1000)  # 6 frames, fewer than delta_width
    features = features_of(CTALFeatureExtractor(do_cmvn=False), audio)
    assert len(features) == 6
    log_mel = features[:, :80]
    slopes = np.polyfit(np.arange(6), log_mel.astype(np.float64), 1)[0]
    np.testing.assert_allclose(features[:, 80:], np.broadcast_to(slopes, (6, 80)), atol=1e-5)


def test_constant_dimensions_normalise_to_zero(extractor):
    assert (features_of(extractor, np.zeros(3000)) == 0).all()  # digital silence: every log-mel is log(1e-6)
    short = features_of(extractor, make_audio(1600))  # 9 frames: constant 'interp' delta
    assert (short[:, 80:] == 0).all() and np.abs(short[:, :80]).max() > 0.5


@pytest.mark.parametrize("num_samples", [5, 799, 800, 1023, 1024, 3000])
def test_reflect_padding_matches_numpy(extractor, num_samples):
    signal = torch.arange(1.0, num_samples + 1, dtype=torch.float64)
    padded = extractor._pad_signals(signal, torch.tensor([num_samples]))[0]
    np.testing.assert_array_equal(padded.numpy(), np.pad(signal.numpy(), 1024, mode="reflect"))


@pytest.mark.parametrize("num_samples", [800, 999, 1000, 1024, 16000, 16199, 16200])
def test_frame_count_formula(extractor, num_samples):
    expected = 1 + num_samples // 200
    assert extractor.num_frames(num_samples) == expected
    mask = extractor(make_audio(num_samples), sampling_rate=SR)["audio_attention_mask"]
    assert mask.shape == (1, expected) and mask.sum() == expected
    assert CTALFeatureExtractor(center=False).num_frames(num_samples + 2048) == expected


def test_batch_equals_one_by_one(extractor):
    lengths = [800, 16000, 1000, 5003, 2047]
    audio = [make_audio(n, seed=n) for n in lengths]
    batch = extractor(audio, sampling_rate=SR)
    features, mask = batch["audio_features"], batch["audio_attention_mask"]
    assert features.shape == (5, 81, 160) and features.dtype == np.float32
    for index, clip in enumerate(audio):
        frames = 1 + lengths[index] // 200
        np.testing.assert_array_equal(mask[index], np.arange(81) < frames)
        np.testing.assert_allclose(features[index, :frames], features_of(extractor, clip), atol=1e-5)
        assert (features[index, frames:] == 0).all()


def test_padding_and_truncation(extractor, caplog):
    audio = [make_audio(16000), make_audio(4000)]  # 81 and 21 frames
    padded = extractor(audio, sampling_rate=SR, padding="max_length", max_length=100)
    assert padded["audio_features"].shape == (2, 100, 160)
    assert padded["audio_attention_mask"].sum(-1).tolist() == [81, 21]
    assert extractor(audio, sampling_rate=SR, pad_to_multiple_of=16)["audio_features"].shape == (2, 96, 160)

    with caplog.at_level(logging.WARNING):
        truncated = extractor(audio, sampling_rate=SR, max_length=50)
    assert "Audio [0] give more than max_length=50 frames" in caplog.text
    assert truncated["audio_attention_mask"].sum(-1).tolist() == [50, 21]
    # CMVN statistics come from the whole utterance, as in the original fine-tuning code.
    np.testing.assert_array_equal(truncated["audio_features"][0], padded["audio_features"][0, :50])
    kept = extractor(audio, sampling_rate=SR, max_length=50, truncation=False)
    assert kept["audio_features"].shape == (2, 81, 160)

    long_default = CTALFeatureExtractor(max_frames=60)(audio, sampling_rate=SR)
    assert long_default["audio_features"].shape == (2, 60, 160)


@pytest.mark.parametrize("recipe", [{}, {"center": False}, {"pad_mode": "constant"}, {"do_cmvn": False}])
def test_long_audio_is_computed_in_bounded_chunks(monkeypatch, recipe):
    """A long utterance never gets a full-length spectrum: each STFT covers one chunk of frames (plus delta context),
    and its truncated features equal the first frames of the one-pass computation (CMVN over the whole utterance)."""
    from ctal_hf.models.ctal import feature_extraction_ctal

    extractor = CTALFeatureExtractor(**recipe)
    audio = make_audio(16000 * 30 + 123)  # 30 s: 2401 frames centred
    frame_bytes = (extractor.n_fft // 2 + 1) * 16
    monkeypatch.setitem(feature_extraction_ctal.SPECTRUM_BYTES, "cpu", 2**40)  # one pass over the whole utterance
    one_pass = features_of(extractor, audio, truncation=False)

    chunk = 300
    monkeypatch.setitem(feature_extraction_ctal.SPECTRUM_BYTES, "cpu", chunk * frame_bytes)
    spectrum_frames = []  # the frame count of every spectrum computed (SciPy's FFT on CPU, torch.stft elsewhere)
    log_mel = CTALFeatureExtractor._log_mel

    def spy(self, waveforms, first_frame, num_frames):
        spectrum_frames.append(max(num_frames))
        return log_mel(self, waveforms, first_frame, num_frames)

    monkeypatch.setattr(CTALFeatureExtractor, "_log_mel", spy)
    truncated = features_of(extractor, audio, max_length=500)
    chunked = features_of(extractor, audio, truncation=False)
    # One chunk plus delta_width - 1 context frames.
    assert spectrum_frames and max(spectrum_frames) <= chunk + extractor.delta_width - 1
    assert truncated.shape == (500, 160) and chunked.shape == one_pass.shape
    np.testing.assert_allclose(truncated, one_pass[:500], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked, one_pass, rtol=1e-6, atol=1e-6)


def test_long_audio_in_a_batch_keeps_its_place(monkeypatch, extractor):
    from ctal_hf.models.ctal import feature_extraction_ctal

    audio = [make_audio(4000), make_audio(16000 * 5, seed=1), make_audio(9000, seed=2)]
    expected = extractor(audio, sampling_rate=SR, max_length=100)
    monkeypatch.setitem(feature_extraction_ctal.SPECTRUM_BYTES, "cpu", 50 * 1025 * 16)  # 401 frames > 50
    chunked = extractor(audio, sampling_rate=SR, max_length=100)
    assert chunked["audio_features"].shape == (3, 100, 160)
    np.testing.assert_array_equal(chunked["audio_attention_mask"], expected["audio_attention_mask"])
    np.testing.assert_allclose(chunked["audio_features"], expected["audio_features"], rtol=1e-6, atol=1e-6)


def test_return_types(extractor):
    audio = make_audio(3000)
    as_numpy = extractor(audio, sampling_rate=SR)
    assert isinstance(as_numpy["audio_features"], np.ndarray) and as_numpy["audio_attention_mask"].dtype == np.int64
    as_torch = extractor(audio, sampling_rate=SR, return_tensors="pt", device="cpu")
    assert as_torch["audio_features"].dtype == torch.float32 and as_torch["audio_attention_mask"].dtype == torch.int64
    np.testing.assert_array_equal(as_torch["audio_features"].numpy(), as_numpy["audio_features"])
    assert "audio_attention_mask" not in extractor(audio, sampling_rate=SR, return_attention_mask=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(extractor):
    audio = [torch.from_numpy(make_audio(n)).cuda() for n in (3000, 9000)]
    on_gpu = extractor(audio, sampling_rate=SR, return_tensors="pt", device="cuda")
    assert on_gpu["audio_features"].is_cuda
    on_cpu = extractor([clip.cpu() for clip in audio], sampling_rate=SR, return_tensors="pt")
    torch.testing.assert_close(on_gpu["audio_features"].cpu(), on_cpu["audio_features"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "recipe",
    [
        {},
        {"window_type": "hamming", "power": 1.0},
        {"win_length": 400, "hop_length": 160, "n_fft": 400, "center": False},
        {"pad_mode": "constant", "window_type": "blackman", "n_fft": 1024},
    ],
)
def test_cpu_spectra_equal_the_torch_stft_path(recipe):
    """The CPU path (SciPy FFT of the windowed samples only) and the accelerator path (`torch.stft`, run here on CPU
    tensors) give the same log-mel energies: the CPU run of the GPU code."""
    extractor = CTALFeatureExtractor(**recipe)
    lengths = [16000, 5003, 2500]
    signals = [torch.from_numpy(make_audio(n, seed=n)) for n in lengths]
    counts = [extractor.num_frames(n) for n in lengths]
    scipy_path = extractor._log_mel_cpu([signal.numpy() for signal in signals], 0, counts)
    torch_path = extractor._log_mel_torch(signals, 0, counts).numpy()
    assert torch_path.shape == (3, 80, counts[0])
    for row, count in enumerate(counts):  # frames after an utterance's own are left unspecified
        assert scipy_path[row].shape == (80, count)
        # float64 rounding: ~1e-14 observed
        np.testing.assert_allclose(scipy_path[row], torch_path[row, :, :count], atol=1e-9, rtol=0)


@pytest.mark.parametrize("recipe", [{}, {"pad_mode": "constant"}, {"center": False}, {"n_fft": 400, "win_length": 400}])
def test_padded_segments_equal_the_padded_signal(recipe):
    """The CPU path pads only the ends of the range it reads (`_padded_segment`); every range equals the same
    columns of the fully padded signal (`_pad_signals`, tested against numpy above), and a range inside the signal is
    a view of it, not a copy."""
    extractor = CTALFeatureExtractor(**recipe)
    pad = extractor.n_fft // 2 if extractor.center else 0
    for length in (800, 1500, 2049, 2051, 5000):
        signal = make_audio(length, seed=length)
        padded = extractor._pad_signals(torch.from_numpy(signal), torch.tensor([length]))[0].numpy()
        bounds = {0, 1, pad - 1, pad, pad + 1, length // 2, length + pad - 1, length + pad, length + 2 * pad}
        for start in sorted(b for b in bounds if 0 <= b < length + 2 * pad):
            for stop in sorted(b for b in bounds | {length + 2 * pad} if start < b <= length + 2 * pad):
                np.testing.assert_array_equal(extractor._padded_segment(signal, start, stop), padded[start:stop])
    signal = make_audio(5000)
    assert np.shares_memory(extractor._padded_segment(signal, pad + 10, pad + 4000), signal)


def test_threads_share_the_blocks_without_changing_the_result(extractor):
    """The CPU path splits its FFT blocks over torch's thread count: the features are the same with 1 and 2."""
    audio = [make_audio(n, seed=n) for n in (16000, 40123, 2500)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = extractor(audio, sampling_rate=SR)["audio_features"]
        torch.set_num_threads(2)
        two = extractor(audio, sampling_rate=SR)["audio_features"]
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, two)


# Largest deviation of `cpu_spectrum_dtype="float32"` from the float64 features (the docstring's figures): measured
# 3.5e-5 with CMVN and 1.2e-4 without over the 300 utterances of the demo corpus, 2.6e-4 on a clipped tone and
# 2.8e-4 on a loud 7 kHz tone; the tolerance leaves room for other CPUs' rounding.
FLOAT32_TOLERANCE = 5e-4


@pytest.mark.parametrize("do_cmvn", [True, False])
def test_float32_spectra_stay_close_to_float64(tmp_path, do_cmvn):
    from ctal_hf.data.demo_corpus import build_demo_corpus

    corpus = build_demo_corpus(tmp_path / "corpus", num_utterances=12, seed=0)
    audio = sorted(str(path) for path in corpus.rglob("*.flac"))
    t = np.arange(3 * SR) / SR
    audio += [make_audio(40123), np.clip(2 * np.sin(2 * np.pi * 200 * t), -1, 1), 0.5 * np.sin(2 * np.pi * 7000 * t)]
    reference = CTALFeatureExtractor(do_cmvn=do_cmvn)
    fast = CTALFeatureExtractor(do_cmvn=do_cmvn, cpu_spectrum_dtype="float32")
    for clip in audio:
        expected = reference(clip, sampling_rate=SR)["audio_features"]
        deviation = np.abs(fast(clip, sampling_rate=SR)["audio_features"] - expected).max()
        assert 0 < deviation <= FLOAT32_TOLERANCE  # > 0: the spectra are float32


def test_accepted_input_forms(extractor, tmp_path):
    audio = make_audio(6000)
    expected = features_of(extractor, audio)
    np.testing.assert_array_equal(features_of(extractor, torch.from_numpy(audio)), expected)
    np.testing.assert_allclose(features_of(extractor, torch.from_numpy(audio).float()), expected, atol=1e-4)
    np.testing.assert_array_equal(features_of(extractor, audio.tolist()), expected)
    np.testing.assert_array_equal(extractor((audio, audio), sampling_rate=SR)["audio_features"][1], expected)

    # Stereo: one recording per list item, channels on the shorter axis, averaged.
    other = make_audio(6000, seed=1)
    mono = (audio + other) / 2
    for stereo in (
        np.stack([audio, other]),
        np.stack([audio, other], axis=1),
        torch.from_numpy(np.stack([audio, other])),
    ):
        np.testing.assert_allclose(features_of(extractor, [stereo]), features_of(extractor, mono), atol=1e-6)

    # Files carry their own rate: no sampling_rate needed, and the header wins over one given for arrays.
    path = tmp_path / "clip.wav"
    soundfile.write(path, audio, SR, subtype="DOUBLE")
    np.testing.assert_array_equal(extractor(path)["audio_features"][0], expected)
    np.testing.assert_array_equal(extractor(str(path), sampling_rate=8000)["audio_features"][0], expected)
    stereo_path = tmp_path / "stereo.flac"
    soundfile.write(stereo_path, np.stack([audio, other], axis=1), SR, subtype="PCM_24")
    np.testing.assert_allclose(extractor(stereo_path)["audio_features"][0], features_of(extractor, mono), atol=1e-3)
    mixed = extractor([str(path), other], sampling_rate=SR)["audio_features"]
    np.testing.assert_array_equal(mixed[0], expected)


def test_other_sampling_rates_are_resampled(extractor, tmp_path):
    audio_44k = make_audio(44100, rate=44100)
    expected = features_of(extractor, soxr.resample(audio_44k, 44100, SR, quality="HQ"))
    ours = extractor(audio_44k, sampling_rate=44100)
    assert ours["audio_attention_mask"].sum() == 1 + 16000 // 200
    np.testing.assert_array_equal(ours["audio_features"][0], expected)
    path = tmp_path / "clip_44k.wav"
    soundfile.write(path, audio_44k, 44100, subtype="DOUBLE")
    np.testing.assert_array_equal(extractor(path)["audio_features"][0], expected)


def test_a_2d_array_is_a_batch(extractor):
    # The transformers convention (Wav2Vec2, Whisper): (batch, samples), one utterance per row, never averaged.
    rows = np.stack([make_audio(4000, seed=seed) for seed in range(4)])
    expected = extractor(list(rows), sampling_rate=SR)
    for batch in (rows, torch.from_numpy(rows)):
        features = extractor(batch, sampling_rate=SR)
        assert features["audio_features"].shape == (4, 21, 160)
        np.testing.assert_array_equal(features["audio_features"], expected["audio_features"])


@pytest.mark.parametrize(
    "audio, kwargs, error, message",
    [
        (make_audio(4000), {}, ValueError, "`sampling_rate` is required for in-memory audio"),
        (make_audio(4000), {"sampling_rate": 0}, ValueError, "must be a positive integer"),
        (np.zeros(0), {"sampling_rate": SR}, ValueError, "Audio 0 is empty"),
        (
            [make_audio(4000), make_audio(799)],
            {"sampling_rate": SR},
            ValueError,
            r"Audio 1 has 799 samples .* fewer than one analysis window \(800 samples = 50 ms\)",
        ),
        (make_audio(300, rate=8000), {"sampling_rate": 8000}, ValueError, "Audio 0 has 600 samples at 16000 Hz"),
        (
            np.array([0.1, np.nan] * 1000),
            {"sampling_rate": SR},
            ValueError,
            "NaN or infinite samples \\(first at sample 1\\)",
        ),
        (torch.full((2000,), float("inf")), {"sampling_rate": SR}, ValueError, "NaN or infinite"),
        (
            (make_audio(4000) * 32767).astype(np.int16),
            {"sampling_rate": SR},
            ValueError,
            r"integer PCM samples .* divide int16 samples by 32768",
        ),
        (torch.zeros(4000, dtype=torch.int32), {"sampling_rate": SR}, ValueError, "integer PCM samples"),
        (np.zeros(4000, dtype=np.complex64), {"sampling_rate": SR}, ValueError, "real-valued float samples"),
        (
            np.zeros((2, 2, 4000)),
            {"sampling_rate": SR},
            ValueError,
            r"3-D audio array of shape \(2, 2, 4000\); a 2-D array is a batch .* one `\(channels, samples\)` array",
        ),
        ([np.zeros((2, 2, 4000))], {"sampling_rate": SR}, ValueError, "Audio 0 has 3 dimensions"),
        (np.float64(0.5), {"sampling_rate": SR}, ValueError, "Audio 0 has 0 dimensions"),
        (
            np.zeros((4000, 2)),
            {"sampling_rate": SR},
            ValueError,
            r"shape \(4000, 2\), read as a batch of 4000 utterances of 2 samples .* ONE recording with 2 channels .*"
            r"pass it in a list, `\[audio\]`",
        ),
        ([], {"sampling_rate": SR}, ValueError, "No audio given"),
        (
            {"array": make_audio(4000), "sampling_rate": SR},
            {"sampling_rate": SR},
            ValueError,
            r"Audio 0 is a dict \(keys \['array', 'sampling_rate'\]\).* `extractor\(item\['array'\], "
            r"sampling_rate=item\['sampling_rate'\]\)`",
        ),
        (b"RIFF....WAVE", {"sampling_rate": SR}, ValueError, "Audio 0 is encoded bytes: pass a path to the file"),
        ("/no/such/file.wav", {}, FileNotFoundError, "No audio file at '/no/such/file.wav'"),
        (make_audio(4000), {"sampling_rate": SR, "padding": False}, ValueError, "always returns a padded batch"),
    ],
)
def test_bad_inputs_raise_clear_errors(extractor, audio, kwargs, error, message):
    with pytest.raises(error, match=message):
        extractor(audio, **kwargs)


def test_undecodable_file_raises(extractor, tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not audio")
    with pytest.raises(ValueError, match="soundfile cannot decode"):
        extractor(path)


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"n_fft": 2047}, "`n_fft` must be even"),
        ({"hop_length": 900}, "must not exceed `win_length`"),
        ({"win_length": 4096}, "must be between 2 and n_fft"),
        ({"f_max": 9000.0}, "f_max <= sampling_rate / 2"),
        ({"delta_width": 4}, "odd integer >= 3"),
        ({"pad_mode": "edge"}, "`pad_mode` must be one of"),
        ({"window_type": "kaiser"}, "`window_type` must be one of"),
        ({"feature_size": 80}, "must be 2 \\* num_mel_bins"),
        ({"cpu_spectrum_dtype": "float16"}, "`cpu_spectrum_dtype` must be one of"),
    ],
)
def test_invalid_recipes_raise(recipe, message):
    with pytest.raises(ValueError, match=message):
        CTALFeatureExtractor(**recipe)


def test_save_and_load_round_trip(tmp_path):
    extractor = CTALFeatureExtractor(
        win_length=400, hop_length=160, n_fft=400, do_cmvn=False, cpu_spectrum_dtype="float32"
    )
    extractor(make_audio(3000), sampling_rate=SR)  # builds the cached CPU operators, which are not saved
    extractor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["cpu_spectrum_dtype"] == "float32"
    loaded = CTALFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == extractor.to_dict()
    assert not {"mel_filters", "_cpu_operator_cache"} & set(loaded.to_dict())
    audio = make_audio(5000)
    np.testing.assert_array_equal(features_of(loaded, audio), features_of(extractor, audio))

"""Architecture hyper-parameters of the translator (``ModelConfig``).

``ModelConfig()`` with its defaults is a tiny model that trains in seconds on a CPU; ``ModelConfig.paper()``
is the paper-size model (12 + 12 layers, d_model 1024, 16 heads, FFN 4096). Vocabulary sizes are not part of
the config: they come from the codecs as a :class:`~musicmoe.models.vocab.VocabSpec` at build time.

Dense and mixture-of-experts decoders differ only by config:

* dense: ``shared_across_modalities=True, experts_per_modality=1, top_k=0`` (one FFN for every token);
* modality-routed MoE: ``shared_across_modalities=False, experts_per_modality=1, top_k=0`` (one FFN per target
  modality; every token is hard-routed to its target modality's FFN: same active parameters as dense);
* modality-routed MoE with learned routing: ``experts_per_modality=E, top_k=k`` (a softmax router inside the
  target modality's group picks ``k`` of its ``E`` experts; optional capacity limit, load-balancing and z-losses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from musicmoe.models.vocab import MODALITIES

CODEBOOK_MODES = ("subdecoder", "delay")
POS_ENCODINGS = ("rotary", "learned")
ACTIVATIONS = ("gelu", "relu")


@dataclass
class ModelConfig:
    """Translator architecture. Every field has a default; unknown keys are an error in :meth:`from_dict`."""

    d_model: int = 64
    n_heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.1
    attn_dropout: float = 0.0
    activation: str = "gelu"
    norm_eps: float = 1e-5
    bias: bool = True
    # positions: "rotary" (RoPE on self-attention queries/keys) or "learned" (absolute table per modality)
    pos_encoding: str = "rotary"
    rope_base: float = 10000.0
    max_src_len: int = 1024  # tokens (frames for multi-codebook modalities), specials included
    max_tgt_len: int = 1024
    max_len_per_modality: dict[str, int] = field(default_factory=dict)  # overrides both limits per modality
    # encoder inputs: VQ codes, or continuous features for image/audio sources (musicmoe.data.features)
    image_input: str = "codes"  # "codes" (image codec) or "pixels" (16 px patches read by a small conv stem)
    audio_input: str = "codes"  # "codes" (audio codec) or "mel" (log-mel frames read by a small conv stem)
    patch: int = 16  # pixel patch size = the image codec's patch (one encoder position per grid cell)
    mel_bins: int = 128
    mel_scale: str = "mel"  # filter spacing: "mel" (HTK mel) or "log" (equal steps in log frequency, as a CQT)
    mel_fmin: float = 30.0  # lowest filter edge (Hz)
    mel_fmax: float = 0.0  # highest filter edge (Hz); 0 = half the feature sample rate
    mel_fft: int = 0  # STFT size (samples); 0 = the smallest power of two >= 4 hops (2048 at a 480-sample hop)
    mel_hop: int = 480  # samples at feature_sample_rate between mel frames (480 at 24 kHz = 20 ms)
    mel_stack: int = 2  # consecutive mel frames per encoder position (2 x 20 ms = 40 ms)
    feature_sample_rate: int = 24000
    stem_channels: list[int] = field(default_factory=lambda: [32, 64, 96])  # pixel stem: stride-2 conv widths
    # audio stem: "linear" (one linear map per position) or "conv" (2-D convolutions over time x frequency, the same
    # filters at every pitch on a log-frequency axis, then a linear map); mel_stem_channels: the conv widths
    mel_stem: str = "linear"
    mel_stem_channels: list[int] = field(default_factory=lambda: [16, 32])
    # 2-D positions of image sources and targets: learned row + column embeddings of the code/patch grid
    grid_positions: bool = True
    max_grid_rows: int = 32
    max_grid_cols: int = 512
    # auxiliary CTC on the encoder for single-codebook targets (lmx, midi): hybrid CTC/attention training
    ctc_weight: float = 0.0  # > 0: add ctc_weight x the CTC loss (per target token) to the training loss
    ctc_upsample: int = 2  # label slots per source position (a system's LMX can be longer than its patch grid)
    # time-aligned cross-attention for audio -> MIDI rows: queries rotated by the decoder's current time (the sum of
    # the MIDI time shifts read so far), keys by their audio frame's centre time, so "attend to now" is a fixed
    # relative offset instead of a search by content (rotary on cross-attention, rope_base; other rows unchanged)
    cross_time: bool = False
    audio_code_rate: float = 75.0  # frames per second of audio codes (key times when audio_input is "codes")
    # CTC labels of MIDI targets: "events" (every event id) or "onsets" (the pitch ids of note-ons only: a
    # monotonic label sequence that sits on the audio frames, so the encoder must say which pitch starts where)
    ctc_midi: str = "events"
    # decoder feed-forward: mixture of experts grouped by target modality
    experts_per_modality: int = 1
    top_k: int = 0  # 0 = hard routing by target modality only (needs experts_per_modality == 1)
    expert_d_ff: int | None = None  # hidden size of each expert (default d_ff)
    moe_every: int = 1  # 1: every decoder layer is MoE; 2: every other layer (the others are dense)
    shared_across_modalities: bool = False  # True: one group for all modalities (dense when 1 expert)
    aux_loss_weight: float = 0.01  # Switch/GShard load-balancing loss
    z_loss_weight: float = 0.001  # router z-loss
    capacity_factor: float | None = None  # training-time expert capacity; None = no token is dropped
    eval_capacity_factor: float | None = None  # same at eval/generation (None keeps decoding exact)
    # multi-codebook outputs
    codebook_mode: str = "subdecoder"  # "subdecoder" (depth Transformer per frame) or "delay" (MusicGen)
    subdecoder_layers: int = 1
    subdecoder_dim: int = 32
    subdecoder_heads: int = 2
    # embeddings, heads, init, loss
    tie_embeddings: bool = False  # output heads share the decoder input embedding tables
    init_std: float = 0.02
    init_from_codecs: bool = True  # a fresh run starts image/audio code embeddings from the codecs' codebooks
    label_smoothing: float = 0.0
    validate_inputs: bool = True  # check token ids against the vocabulary in forward (one host sync)
    # training only, not architecture: torch.compile the teacher-forced pass (Translator.compile_forward; state-dict
    # keys unchanged); shapes become dynamic after the first recompile, so varying batches recompile rarely
    compile: bool = False

    def __post_init__(self) -> None:
        def err(key: str, msg: str) -> None:
            raise ValueError(f"ModelConfig.{key}: {msg}")

        for key in ("d_model", "n_heads", "enc_layers", "dec_layers", "d_ff", "experts_per_modality", "moe_every",
                    "subdecoder_layers", "subdecoder_dim", "subdecoder_heads", "max_src_len", "max_tgt_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                err(key, f"must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            err("n_heads", f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.pos_encoding not in POS_ENCODINGS:
            err("pos_encoding", f"must be one of {POS_ENCODINGS}, got {self.pos_encoding!r}")
        if self.pos_encoding == "rotary" and (self.d_model // self.n_heads) % 2:
            err("pos_encoding", f"rotary needs an even head dim, got {self.d_model // self.n_heads}")
        if self.subdecoder_dim % self.subdecoder_heads:
            err("subdecoder_heads",
                f"subdecoder_dim={self.subdecoder_dim} is not divisible by subdecoder_heads={self.subdecoder_heads}")
        if self.activation not in ACTIVATIONS:
            err("activation", f"must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.codebook_mode not in CODEBOOK_MODES:
            err("codebook_mode", f"must be one of {CODEBOOK_MODES}, got {self.codebook_mode!r}")
        if self.image_input not in ("codes", "pixels"):
            err("image_input", f"must be 'codes' or 'pixels', got {self.image_input!r}")
        if self.audio_input not in ("codes", "mel"):
            err("audio_input", f"must be 'codes' or 'mel', got {self.audio_input!r}")
        if not self.ctc_weight >= 0:
            err("ctc_weight", f"must be >= 0, got {self.ctc_weight!r}")
        if not isinstance(self.ctc_upsample, int) or isinstance(self.ctc_upsample, bool) or self.ctc_upsample < 1:
            err("ctc_upsample", f"must be a positive integer, got {self.ctc_upsample!r}")
        if not self.audio_code_rate > 0:
            err("audio_code_rate", f"must be > 0 frames per second, got {self.audio_code_rate!r}")
        if self.ctc_midi not in ("events", "onsets"):
            err("ctc_midi", f"must be 'events' or 'onsets', got {self.ctc_midi!r}")
        if self.mel_stem not in ("linear", "conv"):
            err("mel_stem", f"must be 'linear' or 'conv', got {self.mel_stem!r}")
        self.mel_stem_channels = [int(c) for c in self.mel_stem_channels]
        if len(self.mel_stem_channels) != 2 or any(c < 1 for c in self.mel_stem_channels):
            err("mel_stem_channels", f"must be two positive channel counts, got {self.mel_stem_channels}")
        if self.mel_scale not in ("mel", "log"):
            err("mel_scale", f"must be 'mel' or 'log', got {self.mel_scale!r}")
        nyquist = self.feature_sample_rate / 2
        if not 0 < self.mel_fmin < (self.mel_fmax or nyquist) <= nyquist:
            err("mel_fmin", f"need 0 < mel_fmin < mel_fmax <= {nyquist:g} Hz (half feature_sample_rate), got "
                f"mel_fmin={self.mel_fmin}, mel_fmax={self.mel_fmax}")
        if not isinstance(self.mel_fft, int) or isinstance(self.mel_fft, bool) or (
                self.mel_fft and self.mel_fft < self.mel_hop):
            err("mel_fft", f"must be 0 (automatic) or an integer >= mel_hop ({self.mel_hop}), got {self.mel_fft!r}")
        for key in ("patch", "mel_bins", "mel_hop", "mel_stack", "feature_sample_rate", "max_grid_rows",
                    "max_grid_cols"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                err(key, f"must be a positive integer, got {value!r}")
        self.stem_channels = [int(c) for c in self.stem_channels]
        if any(c < 1 for c in self.stem_channels):
            err("stem_channels", f"must be positive channel counts, got {self.stem_channels}")
        if self.image_input == "pixels" and self.patch != 2 ** (len(self.stem_channels) + 1):
            err("stem_channels", f"the pixel stem halves the image {len(self.stem_channels) + 1} times "
                f"(one stride-2 conv per entry, plus the projection), so it needs patch = "
                f"{2 ** (len(self.stem_channels) + 1)}, got patch={self.patch}")
        for key in ("dropout", "attn_dropout", "label_smoothing"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                err(key, f"must be in [0, 1), got {value!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            err("top_k", f"must be an integer >= 0, got {self.top_k!r}")
        if self.top_k > self.experts_per_modality:
            err("top_k", f"top_k={self.top_k} exceeds experts_per_modality={self.experts_per_modality}")
        if self.top_k == 0 and self.experts_per_modality != 1:
            err("top_k", f"top_k=0 (hard routing only) needs experts_per_modality=1, got {self.experts_per_modality}"
                "; set top_k >= 1 to route inside each modality's group")
        if self.expert_d_ff is not None and (not isinstance(self.expert_d_ff, int) or self.expert_d_ff < 1):
            err("expert_d_ff", f"must be a positive integer or None, got {self.expert_d_ff!r}")
        for key in ("capacity_factor", "eval_capacity_factor"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                err(key, f"must be > 0 or None, got {value!r}")
        for key in ("aux_loss_weight", "z_loss_weight"):
            if getattr(self, key) < 0:
                err(key, f"must be >= 0, got {getattr(self, key)!r}")
        if self.init_std <= 0:
            err("init_std", f"must be > 0, got {self.init_std!r}")
        if self.norm_eps <= 0:
            err("norm_eps", f"must be > 0, got {self.norm_eps!r}")
        self.max_len_per_modality = dict(self.max_len_per_modality)
        for key, value in self.max_len_per_modality.items():
            if key not in MODALITIES:
                err("max_len_per_modality", f"unknown modality {key!r}; expected one of {MODALITIES}")
            if not isinstance(value, int) or value < 1:
                err("max_len_per_modality", f"{key}: must be a positive integer, got {value!r}")

    # --- derived -------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def feature_dims(self) -> dict[str, int]:
        """Feature width per continuous source modality (empty when every source is read as codes)."""
        out = {}
        if self.image_input == "pixels":
            out["image"] = self.patch * self.patch
        if self.audio_input == "mel":
            out["audio"] = self.mel_bins * self.mel_stack
        return out

    @property
    def audio_frame_seconds(self) -> tuple[float, float]:
        """(seconds between encoder positions of an audio source, centre of position 0 in seconds)."""
        if self.audio_input == "mel":
            hop = self.mel_hop / self.feature_sample_rate
            return hop * self.mel_stack, hop * (self.mel_stack - 1) / 2
        return 1.0 / self.audio_code_rate, 0.5 / self.audio_code_rate

    @property
    def n_groups(self) -> int:
        """Expert groups in each MoE layer: one per target modality, or one shared group."""
        return 1 if self.shared_across_modalities else len(MODALITIES)

    @property
    def ffn_dim(self) -> int:
        """Hidden size of each expert."""
        return self.expert_d_ff if self.expert_d_ff is not None else self.d_ff

    def is_moe_layer(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` (0-based) has the grouped expert FFN (else one dense FFN)."""
        return (layer + 1) % self.moe_every == 0

    # --- (de)serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown}; known keys are {sorted(names)}")
        return cls(**dict(data))

    @classmethod
    def paper(cls, **overrides: Any) -> ModelConfig:
        """Paper size: 12 + 12 layers, d_model 1024, 16 heads, FFN 4096, modality-routed decoder FFNs."""
        values: dict[str, Any] = dict(
            d_model=1024, n_heads=16, enc_layers=12, dec_layers=12, d_ff=4096, dropout=0.1,
            max_src_len=2048, max_tgt_len=2048, subdecoder_layers=2, subdecoder_dim=512, subdecoder_heads=8,
        )
        values.update(overrides)
        return cls.from_dict(values)

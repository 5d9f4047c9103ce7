"""``Translator``: one encoder-decoder Transformer for every (source modality -> target modality) pair.

API (stable; the training module builds on it)::

    model = Translator(ModelConfig(...), VocabSpec.build(lmx_vocab_size, midi_vocab_size))
    out = model(batch)                  # Batch from musicmoe.models.batch.collate
    out.loss.backward()                 # CE (+ weighted MoE aux/z losses)
    out.loss_per_task[task_id], out.loss_per_modality["audio"], out.metrics["moe/aux_loss"], ...
    seqs = model.generate(src_tokens, src_mask, src_modality, tgt_modality, max_len=512)
    # seqs[i]: (T,) content ids for lmx/midi targets, (Q, T) codes for image/audio targets (EOS stripped)

Source side: token embeddings of the row's source modality (sum over codebooks) + a target-modality
embedding (the task token) + positions (rotary in self-attention, or a learned table per modality).
Target side: BOS frame first; loss = cross-entropy averaged over a frame's codebooks ("nats per code"), averaged
over all predicted target tokens/frames of the batch (PAD ignored; the training module can instead weight each
task's mean explicitly, ``optim.loss_norm``), + ``aux_loss_weight * aux + z_loss_weight * z``
(router losses averaged over MoE layers, only with ``top_k >= 1``), + ``ctc_weight * ctc`` with ``model.ctc_weight
> 0``: a linear head per single-codebook target modality (lmx, midi) reads the encoder output and emits
``ctc_upsample`` label distributions per source position; its CTC loss (PAD id = blank, per target token, averaged
over rows) ties each target token to a stretch of the source, so the decoder's cross-attention finds its place
sooner (hybrid CTC/attention training as in speech recognition). Generation never uses the CTC heads.
Every parameter takes part in the loss of every batch (heads of absent target modalities with weight 0), so DDP
needs no ``find_unused_parameters``.

Host-device syncs: a batch from ``collate`` carries a :class:`~musicmoe.models.batch.BatchInfo` (per-row
lengths, modalities and tasks on the host). ``forward`` then groups the rows by target modality (a device
``argsort`` when they are not grouped already) and plans the whole step on the host (:class:`HostPlan`): no key
mask when nothing is padded, expert groups and output heads on contiguous row slices, per-task losses with
``index_add_``, so a training step reads nothing back from the GPU (with ``validate_inputs=False``; the input
check is one sync). Without the info (or with ``return_logits``) the same results come from the general path,
which selects the real positions with ``nonzero`` (syncs in every layer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from musicmoe.models.attention import (
    DecodeClock,
    KVCache,
    MultiHeadAttention,
    Rope,
    StaticKVCache,
    rotary_tables,
    row_rotary_tables,
)
from musicmoe.models.batch import Batch, BatchInfo
from musicmoe.models.codebooks import DepthDecoder, apply_delay
from musicmoe.models.config import ModelConfig
from musicmoe.models.embedding import LearnedPositions, TokenEmbedding
from musicmoe.models.generation import generate
from musicmoe.models.inputs import ConvMelStem, GridPositions, MelStem, PixelStem
from musicmoe.models.layers import DecoderLayer, SelfAttentionBlock
from musicmoe.models.moe import FeedForward, GroupedMoE, HardRoutingPlan, MoEStats
from musicmoe.models.vocab import MODALITIES, VocabSpec, modality_index


@dataclass
class ModelOutput:
    """Result of ``Translator.forward``.

    ``loss``: scalar to optimise (CE + weighted router losses); ``ce_loss``: the CE part;
    ``loss_per_task``: task id -> CE of that task's rows; ``loss_per_modality``: target modality name -> CE;
    ``metrics``: detached scalar tensors (``ce_loss``, ``tokens``, ``moe/aux_loss``, ``moe/z_loss``,
    ``moe/dropped``, ``moe/dropped_frac``, ``moe/load/<group>/<expert>`` = fraction of the group's
    assignments, averaged over MoE layers; ``<group>`` is a modality name or ``shared``);
    ``moe_stats``: per MoE layer :class:`MoEStats`; ``logits``: target modality -> (N, Q, V + 4) logits of
    the N predicted positions of that modality (only with ``return_logits=True``).
    """

    loss: torch.Tensor
    ce_loss: torch.Tensor
    loss_per_task: dict[int, torch.Tensor]
    loss_per_modality: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor]
    moe_stats: list[MoEStats] = field(default_factory=list)
    logits: dict[str, torch.Tensor] | None = None


class OutputHead(nn.Module):
    """``n_out`` parallel vocabulary projections (one per codebook); weights tied to the embedding if asked."""

    def __init__(self, d_model: int, n_out: int, table_size: int, tied: bool) -> None:
        super().__init__()
        self.weight = None if tied else nn.Parameter(torch.empty(n_out, table_size, d_model))
        self.bias = nn.Parameter(torch.zeros(n_out, table_size))

    def forward(self, h: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if self.weight is not None else weight
        assert w is not None
        if w.shape[0] == 1:  # squeeze, not w[0]: its gradient is a view, not a zero-filled copy
            return F.linear(h, w.squeeze(0), self.bias.squeeze(0))[:, None, :]
        return torch.einsum("nd,qvd->nqv", h, w.to(h.dtype)) + self.bias.to(h.dtype)


@dataclass
class CrossTimes:
    """Time alignment of cross-attention (``model.cross_time``): ``keys`` (B, S) the source positions' times in MIDI
    steps and ``rows`` (B,) the aligned rows (audio source, MIDI target); keys are 0 on the other rows."""

    keys: torch.Tensor
    rows: torch.Tensor

    def index_select(self, index: torch.Tensor) -> CrossTimes:
        return CrossTimes(self.keys.index_select(0, index), self.rows.index_select(0, index))

    def repeat_interleave(self, k: int) -> CrossTimes:
        return CrossTimes(self.keys.repeat_interleave(k, 0), self.rows.repeat_interleave(k, 0))


class DecoderCache:
    """Per-layer self-attention KV caches plus cross-attention keys/values computed once per source (and, with
    ``cross_times``, each row's current time: the sum of the time shifts decoded so far)."""

    def __init__(self, model: Translator, memory: torch.Tensor, memory_mask: torch.Tensor, max_len: int,
                 tgt_rows: torch.Tensor | None = None, cross_times: CrossTimes | None = None,
                 rows_per_modality: tuple[int, ...] | None = None, static: bool = False) -> None:
        # static: fixed-size buffers written at a device-side position (no host state changes per step, so a
        # compiled step is traced once); else caches whose views grow by the new positions
        self.clock = DecodeClock(max_len, memory.device) if static else None
        cfg = model.config
        self.self_attn: list[KVCache | StaticKVCache] = (
            [StaticKVCache(self.clock, memory.shape[0], cfg.n_heads, cfg.head_dim, memory.dtype, memory.device)
             for _ in model.decoder] if self.clock is not None else [KVCache(max_len) for _ in model.decoder])
        key_rope = model.time_rope(cross_times.keys) if cross_times is not None else None
        self.cross = model.cross_kv(memory, key_rope)
        self.memory_mask = attention_mask(memory_mask)
        self.tgt_rows = tgt_rows  # image target grid heights (rows stay within their example when reordered)
        self.times = cross_times
        self.now = memory.new_zeros(memory.shape[0], dtype=torch.float32) if cross_times is not None else None
        # rows of each target modality, rows ordered by modality, known on the host (generation decodes one target
        # modality at a time): hard-routed experts then run on row slices with no read-back
        self.rows_per_modality = rows_per_modality

    @property
    def length(self) -> int:
        """Cached positions (a host read of the device clock for a static cache)."""
        if self.clock is not None:
            return int(self.clock.pos)
        return self.self_attn[0].length

    def reorder(self, index: torch.Tensor) -> None:
        """Select rows (beam search); rows stay within their example, so the cross-attention part is kept."""
        for c in self.self_attn:
            c.reorder(index)
        if self.now is not None:
            self.now = self.now.index_select(0, index)


def attention_mask(mask: torch.Tensor, padded: bool | None = None) -> torch.Tensor | None:
    """(B, S) key mask -> SDPA boolean mask (B, 1, 1, S), or ``None`` when nothing is padded (flash-friendly).

    ``padded``: whether any key is masked, when the caller knows it on the host; ``None`` reads it back from the
    device (a host sync).
    """
    if padded is None:
        padded = not bool(mask.all())
    return mask[:, None, None, :] if padded else None


@dataclass(frozen=True)
class HostPlan:
    """Host-side facts of a teacher-forced pass (from a :class:`~musicmoe.models.batch.BatchInfo`), so that it
    needs no device read-back. Deliberately few values (no per-row lengths), so that a compiled forward is
    specialised on little: the position-table checks that need lengths are done when the plan is made.

    ``src_padded``/``dec_padded``: some source key / decoder input position is padding; ``rows_per_modality``:
    rows of each target modality, the rows being ordered by target modality; ``multi_target``: some row has a
    multi-codebook target; ``tasks``: the distinct task ids (all >= 0), sorted.
    """

    src_padded: bool
    dec_padded: bool
    rows_per_modality: tuple[int, ...]
    multi_target: bool
    tasks: tuple[int, ...]


def midi_onset_layout(spec: Any, midi_config: Mapping[str, Any] | None) -> tuple[int, int, int, int, int]:
    """``(pitch_first, pitch_stop, velocity_first, velocity_stop, tie)`` event ids of the MIDI codec whose settings are
    ``midi_config``; raises ``ValueError`` when that codec's vocabulary is not the model's MIDI vocabulary."""
    from musicmoe.codecs.midi import MidiCodec, MidiCodecConfig

    codec = MidiCodec(MidiCodecConfig(**dict(midi_config or {})))
    if codec.vocab_size != spec.vocab_size:
        raise ValueError(f"model.ctc_midi=onsets: the MIDI codec settings {dict(midi_config or {})} give "
                         f"{codec.vocab_size} event ids, the model's MIDI vocabulary has {spec.vocab_size}")
    return (*codec.vocab.id_range("pitch"), *codec.vocab.id_range("velocity"), codec.tie_id)


def midi_time_layout(spec: Any, midi_config: Mapping[str, Any] | None) -> tuple[int, int, int, int]:
    """``(shift_first, shift_stop, shift_min, steps_per_second)``: the shift event ids of the MIDI codec whose settings
    are ``midi_config`` (id ``shift_first + i`` advances ``shift_min + i`` steps); ``ValueError`` when that codec's
    vocabulary is not the model's MIDI vocabulary."""
    from musicmoe.codecs.midi import MidiCodec, MidiCodecConfig

    codec = MidiCodec(MidiCodecConfig(**dict(midi_config or {})))
    if codec.vocab_size != spec.vocab_size:
        raise ValueError(f"model.cross_time: the MIDI codec settings {dict(midi_config or {})} give "
                         f"{codec.vocab_size} event ids, the model's MIDI vocabulary has {spec.vocab_size}")
    first, stop = codec.vocab.id_range("shift")
    return first, stop, codec.vocab.range("shift").min_value, codec.config.steps_per_second


def note_on_labels(ids: torch.Tensor, lengths: torch.Tensor,
                   layout: tuple[int, int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pitch ids of the note-ons in MIDI event rows ``ids`` (n, L) of ``lengths`` events, packed to the left
    (the rest of each row is padding), and their counts. A pitch event is a note-on when it follows the tie token
    and the last velocity event before it is not 0 (see :mod:`musicmoe.codecs.midi.codec`)."""
    p0, p1, v0, v1, tie = layout
    pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    inside = pos < lengths[:, None]
    after_tie = torch.cummax(torch.where(ids == tie, pos, -1), 1).values >= 0
    is_vel = (ids >= v0) & (ids < v1)
    last_vel = torch.cummax(torch.where(is_vel, pos, -1), 1).values
    vel = (ids.gather(1, last_vel.clamp_min(0)) - v0).masked_fill(last_vel < 0, 0)
    on = (ids >= p0) & (ids < p1) & inside & after_tie & (vel > 0)
    order = torch.sort((~on).to(torch.uint8), dim=1, stable=True).indices
    return ids.gather(1, order), on.sum(1)


class Translator(nn.Module):
    """Encoder-decoder translator between score images, LMX, MIDI and audio tokens (see the module docstring)."""

    def __init__(self, config: ModelConfig, vocab: VocabSpec, midi_config: Mapping[str, Any] | None = None) -> None:
        """``midi_config``: the MIDI codec's settings (``MidiCodecConfig`` keys; defaults when ``None``), needed only
        by ``model.ctc_midi: onsets`` to find note-on pitch ids among the event ids."""
        super().__init__()
        self.config, self.vocab = config, vocab
        cfg, d = config, config.d_model
        self.embed = TokenEmbedding(vocab, d)
        self.target_modality_emb = nn.Embedding(len(MODALITIES), d)
        if cfg.pos_encoding == "learned":
            lens = []
            for spec in vocab:
                extra = spec.codebooks - 1 if (cfg.codebook_mode == "delay" and spec.multi_codebook) else 0
                lens.append(cfg.max_len_per_modality.get(spec.name, max(cfg.max_src_len, cfg.max_tgt_len + extra)))
            self.positions: LearnedPositions | None = LearnedPositions(lens, d)
        else:
            self.positions = None
        self.stems = nn.ModuleDict()  # continuous source inputs (see musicmoe.models.inputs)
        dims = cfg.feature_dims
        if "image" in dims:
            self.stems["image"] = PixelStem(cfg.stem_channels, d, cfg.patch)
        if "audio" in dims:
            self.stems["audio"] = (ConvMelStem(cfg.mel_bins, cfg.mel_stack, cfg.mel_stem_channels, d)
                                   if cfg.mel_stem == "conv" else MelStem(dims["audio"], d))
        self.grid = GridPositions(cfg.max_grid_rows, cfg.max_grid_cols, d) if cfg.grid_positions else None
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(
            SelfAttentionBlock(d, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.attn_dropout, cfg.activation, cfg.bias,
                               cfg.norm_eps, cfg.pos_encoding == "rotary")
            for _ in range(cfg.enc_layers)
        )
        self.enc_norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.decoder = nn.ModuleList(DecoderLayer(cfg, cfg.is_moe_layer(i)) for i in range(cfg.dec_layers))
        self.dec_norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.heads = nn.ModuleDict()
        for spec in vocab:
            if spec.multi_codebook and cfg.codebook_mode == "subdecoder":
                self.heads[spec.name] = DepthDecoder(spec, cfg)
            else:
                self.heads[spec.name] = OutputHead(d, spec.codebooks, spec.table_size, cfg.tie_embeddings)
        self.ctc_heads = nn.ModuleDict()  # auxiliary CTC on the encoder (model.ctc_weight > 0)
        if cfg.ctc_weight > 0:
            for spec in vocab:
                if not spec.multi_codebook:
                    self.ctc_heads[spec.name] = nn.Linear(d, cfg.ctc_upsample * spec.table_size)
        self._time_layout: tuple[int, int, int, int] | None = None
        if cfg.cross_time:
            self._time_layout = midi_time_layout(vocab[modality_index("midi")], midi_config)
        self._onset_ids: tuple[int, int, int, int, int] | None = None
        if "midi" in self.ctc_heads and cfg.ctc_midi == "onsets":
            self._onset_ids = midi_onset_layout(vocab[modality_index("midi")], midi_config)
        self.register_buffer("_pad", torch.tensor([s.pad_id for s in vocab]), persistent=False)
        self.register_buffer("_bos", torch.tensor([s.bos_id for s in vocab]), persistent=False)
        self.register_buffer("_eos", torch.tensor([s.eos_id for s in vocab]), persistent=False)
        self.register_buffer("_codebooks", torch.tensor([s.codebooks for s in vocab]), persistent=False)
        self._init_weights()

    # --- construction ------------------------------------------------------------------------------------
    def _init_weights(self) -> None:
        std = self.config.init_std
        out_std = std / math.sqrt(2 * (self.config.enc_layers + self.config.dec_layers))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, GroupedMoE):
                nn.init.normal_(module.w_in, std=std)
                nn.init.normal_(module.w_out, std=out_std)
            elif isinstance(module, OutputHead) and module.weight is not None:
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, DepthDecoder):
                nn.init.normal_(module.head_weight, std=std)
                nn.init.normal_(module.pos_emb, std=std)
        for module in self.modules():  # residual output projections: scaled down (GPT-2 style)
            if isinstance(module, MultiHeadAttention):
                nn.init.normal_(module.out_proj.weight, std=out_std)
            elif isinstance(module, FeedForward):
                nn.init.normal_(module.fc_out.weight, std=out_std)

    def hparams(self) -> dict:
        """Everything needed to rebuild the module: ``Translator.from_hparams(model.hparams())``."""
        return {"config": self.config.to_dict(), "vocab": self.vocab.to_dict()}

    @classmethod
    def from_hparams(cls, hparams: dict) -> Translator:
        return cls(ModelConfig.from_dict(hparams["config"]), VocabSpec.from_dict(hparams["vocab"]))

    @torch.no_grad()
    def init_codebook_embeddings(self, modality: str | int, codebooks: torch.Tensor, seed: int = 0) -> None:
        """Initialise the content rows of a multi-codebook modality's embedding tables from codec codebooks.

        ``codebooks`` (Q, V, d_codec), e.g. the RVQ codebooks of EnCodec or the image RQ-VAE. When
        ``d_codec != d_model`` the vectors go through a fixed random Gaussian projection (distances kept up to a
        scale); each table is then centred and rescaled to the model's ``init_std``. Specials keep their init.
        """
        m = modality_index(modality)
        spec = self.vocab[m]
        if codebooks.ndim != 3 or codebooks.shape[:2] != (spec.codebooks, spec.vocab_size):
            raise ValueError(f"init_codebook_embeddings: {spec.name} needs ({spec.codebooks}, {spec.vocab_size}, "
                             f"d) codebooks, got {tuple(codebooks.shape)}")
        vecs = codebooks.detach().float().cpu()
        d_codec, d = vecs.shape[2], self.config.d_model
        if d_codec != d:
            gen = torch.Generator().manual_seed(seed)
            vecs = vecs @ (torch.randn(d_codec, d, generator=gen) / math.sqrt(d))
        for q in range(spec.codebooks):
            v = vecs[q] - vecs[q].mean(0, keepdim=True)
            v = v / v.std().clamp_min(1e-8) * self.config.init_std
            self.embed.table(m, q)[: spec.vocab_size].copy_(v.to(self.embed.embedding.weight))

    # --- encoder / decoder -------------------------------------------------------------------------------
    def _rope(self, positions: torch.Tensor) -> Rope | None:
        if self.config.pos_encoding != "rotary":
            return None
        return rotary_tables(positions, self.config.head_dim, self.config.rope_base)

    def encode(self, src_tokens: torch.Tensor, src_mask: torch.Tensor, src_modality: torch.Tensor,
               tgt_modality: torch.Tensor, host: HostPlan | None = None, src_features: torch.Tensor | None = None,
               src_rows: torch.Tensor | None = None,
               info: BatchInfo | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (B, S, d) and the key mask actually used (rows without tokens keep position 0).

        ``host``: the pass's :class:`HostPlan` (padding known without a device read-back). ``src_features``,
        ``src_rows``: continuous inputs and image grid heights (see :class:`~musicmoe.models.batch.Batch`);
        ``info``: the batch's host-side facts (lengths and grid heights without a read-back).
        """
        if src_tokens.shape[1] == 0:  # no source at all: one masked PAD position per row
            pad = self._pad[src_modality][:, None, None].expand(-1, 1, src_tokens.shape[2])
            src_tokens = torch.cat([src_tokens, pad], dim=1)
            src_mask = torch.zeros(src_tokens.shape[:2], dtype=torch.bool, device=src_tokens.device)
        mask = src_mask.clone()
        mask[:, 0] |= ~src_mask.any(dim=1)  # an all-masked row would make SDPA return NaN
        s = src_tokens.shape[1]
        positions = torch.arange(s, device=src_tokens.device)
        task_emb = self.target_modality_emb(tgt_modality)[:, None, :]
        x = self.embed(src_tokens, src_modality) + task_emb
        if len(self.stems):
            x = self._embed_features(x, task_emb, src_tokens, src_mask, src_modality, src_features, src_rows, info)
        if self.grid is not None and src_rows is not None and src_rows.shape[0] == x.shape[0]:
            image = modality_index("image")
            x = x + self.grid(torch.where(src_modality == image, src_rows, 0), positions)
        if self.positions is not None:
            if host is None:  # (with a plan, checked when the plan was made)
                self.positions.check_lengths(src_modality, mask.sum(1))
            x = x + self.positions(src_modality, positions)
        x = self.drop(x)
        attn = attention_mask(mask, None if host is None else host.src_padded)
        rope = self._rope(positions)
        for layer in self.encoder:
            x = layer(x, attn_mask=attn, rope=rope)
        return self.enc_norm(x), mask

    def _embed_features(self, x: torch.Tensor, task_emb: torch.Tensor, src_tokens: torch.Tensor,
                        src_mask: torch.Tensor, src_modality: torch.Tensor, src_features: torch.Tensor | None,
                        src_rows: torch.Tensor | None, info: BatchInfo | None) -> torch.Tensor:
        """``x`` with the positions of feature-read sources replaced by their stem's output (+ the task embedding).

        Rows of a feature modality hold PAD ids where their features are (see ``collate``). Stems that no row
        uses still join the graph with weight 0 (DDP needs no ``find_unused_parameters``)."""
        b = x.shape[0]
        if info is not None and info.src_rows and len(info.src_modality) == b:
            mods, lens, rows = list(info.src_modality), list(info.src_lengths), list(info.src_rows)
        else:  # host read-back
            mods, lens = src_modality.tolist(), src_mask.sum(1).tolist()
            rows = src_rows.tolist() if src_rows is not None else [0] * b
        for name, stem in self.stems.items():
            m = modality_index(name)
            idx = [i for i, mm in enumerate(mods) if mm == m] if src_features is not None else []
            if not idx:
                if torch.is_grad_enabled():
                    x = x + 0.0 * sum(p.sum() for p in stem.parameters())
                continue
            dim = self.config.feature_dims[name]
            if src_features.shape[2] < dim:
                raise ValueError(f"encode: {name} features need width {dim}, the batch has {src_features.shape[2]}")
            index = torch.tensor(idx, device=x.device)
            feats = src_features.index_select(0, index)[..., :dim].to(x.dtype)
            emb = stem(feats, [rows[i] for i in idx], [lens[i] - 1 for i in idx]) if name == "image" else stem(feats)
            sub = x.index_select(0, index)
            is_pad = src_tokens.index_select(0, index)[..., 0] == self.vocab[m].pad_id
            is_feat = is_pad & src_mask.index_select(0, index)
            new = torch.where(is_feat[..., None], emb.to(x.dtype) + task_emb.index_select(0, index), sub)
            x = x.index_copy(0, index, new)
        return x

    def cross_times(self, src_modality: torch.Tensor, tgt_modality: torch.Tensor, length: int) -> CrossTimes | None:
        """The :class:`CrossTimes` of a batch whose encoder output has ``length`` positions (``None`` unless
        ``model.cross_time``): position ``i`` of an audio source sits at its frame's centre time."""
        if self._time_layout is None:
            return None
        step, centre = self.config.audio_frame_seconds
        rows = (src_modality == modality_index("audio")) & (tgt_modality == modality_index("midi"))
        t = (torch.arange(length, device=src_modality.device, dtype=torch.float32) * step + centre)
        return CrossTimes(t[None, :] * self._time_layout[3] * rows[:, None], rows)

    def time_rope(self, times: torch.Tensor) -> Rope:
        """Rotary tables of per-row times (B, L) for time-aligned cross-attention."""
        return row_rotary_tables(times, self.config.head_dim, self.config.rope_base)

    def _query_times(self, tokens: torch.Tensor, rows: torch.Tensor, now: torch.Tensor | None) -> torch.Tensor:
        """(B, L) time of each decoder input position: ``now`` plus the shifts of ``tokens`` up to and including it."""
        first, stop, low, _ = self._time_layout  # type: ignore[misc]
        ids = tokens[..., 0]
        shift = torch.where((ids >= first) & (ids < stop) & rows[:, None], ids - first + low, 0)
        t = shift.cumsum(1).float()
        return t if now is None else t + now[:, None]

    def cross_kv(self, memory: torch.Tensor, key_rope: Rope | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values (B, H, S, D) of every decoder layer from one projection of ``memory``: the
        layers' key/value weights are concatenated (one matrix product instead of one per layer, forward and
        backward); ``key_rope`` rotates the keys (time-aligned cross-attention)."""
        attns = [layer.cross_attn for layer in self.decoder]
        weight = torch.cat([a.kv_proj.weight for a in attns])
        bias = torch.cat([a.kv_proj.bias for a in attns]) if attns[0].kv_proj.bias is not None else None
        kv = F.linear(memory, weight, bias)
        return [a.split_kv(part, key_rope) for a, part in zip(attns, kv.split(weight.shape[0] // len(attns), -1))]

    def decoder_cache(self, memory: torch.Tensor, memory_mask: torch.Tensor, max_len: int,
                      tgt_rows: torch.Tensor | None = None, cross_times: CrossTimes | None = None,
                      rows_per_modality: tuple[int, ...] | None = None, static: bool = False) -> DecoderCache:
        """An empty :class:`DecoderCache` over encoder output ``memory`` for up to ``max_len`` decoder positions;
        ``rows_per_modality``: rows of each target modality when the rows are ordered by it (no routing sync);
        ``static``: fixed-shape buffers at a device-side position (for a compiled decoding step)."""
        return DecoderCache(self, memory, memory_mask, max_len, tgt_rows, cross_times, rows_per_modality, static)

    def decode(
        self,
        tokens: torch.Tensor,
        tgt_modality: torch.Tensor,
        *,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        host: HostPlan | None = None,
        tgt_rows: torch.Tensor | None = None,
        cross_times: CrossTimes | None = None,
    ) -> tuple[torch.Tensor, list[MoEStats]]:
        """Decoder hidden states (B, L, d) for input frames ``tokens`` (B, L, Qmax).

        ``cross_times`` (:meth:`cross_times`; with ``cache``, given to :meth:`decoder_cache` instead) aligns
        cross-attention in time.

        Without ``cache``: full (teacher-forced) pass over ``memory``; ``token_mask`` (B, L) marks the positions
        whose outputs matter (others are not routed to experts, or, with ``host``, routed and zeroed). With
        ``cache``: ``tokens`` continue the cached prefix (incremental decoding) and cross-attention uses the cached
        keys/values. ``host`` (teacher forcing only): the pass's :class:`HostPlan`; hard-routed experts then run
        on contiguous row slices and nothing is read back from the device.
        """
        if host is not None and cache is not None:
            raise ValueError("decode: a HostPlan is for teacher-forced passes, not for cached decoding")
        b, length, _ = tokens.shape
        if cache is not None and cache.clock is not None:
            positions = cache.clock.start(length)  # device-side: the same graph at every step
        else:
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + length, device=tokens.device)
        x = self.embed(tokens, tgt_modality)
        if tgt_rows is None and cache is not None:
            tgt_rows = cache.tgt_rows
        if self.grid is not None and tgt_rows is not None:  # code j of an image target sits at position j + 1
            x = x + self.grid(torch.where(tgt_modality == modality_index("image"), tgt_rows, 0), positions - 1)
        if self.positions is not None:
            if host is None and token_mask is not None:  # (with a plan, checked when the plan was made)
                self.positions.check_lengths(tgt_modality, token_mask.sum(1))
            x = x + self.positions(tgt_modality, positions)
        x = self.drop(x)
        group = torch.zeros_like(tgt_modality) if self.config.shared_across_modalities else tgt_modality
        group = group[:, None].expand(b, length)
        modality = tgt_modality[:, None].expand(b, length)
        if cache is not None:
            mem_attn = cache.memory_mask
        elif host is not None and memory_mask is not None:
            mem_attn = attention_mask(memory_mask, host.src_padded)
        else:
            mem_attn = attention_mask(memory_mask)
        plan = None
        cfg = self.config
        capacity = cfg.capacity_factor if self.training else cfg.eval_capacity_factor
        host_rows = host.rows_per_modality if host is not None else (
            cache.rows_per_modality if cache is not None and token_mask is None else None)
        if cfg.top_k == 0 and cfg.n_groups == 1 and capacity is None:  # one group: statistics once
            plan = HardRoutingPlan.single(tokens.shape[0], modality, token_mask)
        elif cfg.top_k == 0 and cfg.n_groups > 1:  # hard routing: one plan for all layers
            if host_rows is not None and capacity is None:
                plan = HardRoutingPlan.contiguous(list(host_rows), group, modality,
                                                  token_mask if host is not None and host.dec_padded else None,
                                                  cfg.n_groups)
            else:
                plan = HardRoutingPlan.build(group, modality, token_mask, cfg.n_groups)
        stats: list[MoEStats] = []
        rope = self._rope(positions)
        cross_rope = None
        if cache is not None and cache.times is not None:
            q_times = self._query_times(tokens, cache.times.rows, cache.now)
            cache.now = q_times[:, -1]
            cross_rope = (self.time_rope(q_times), None)  # the cached keys are rotated
        elif cache is None and cross_times is not None:
            cross_rope = (self.time_rope(self._query_times(tokens, cross_times.rows, None)), None)
        if cache is not None:
            memory_kv = cache.cross
        elif memory is not None:  # every layer's keys/values in one projection (keys rotated by their times)
            memory_kv = self.cross_kv(memory, self.time_rope(cross_times.keys) if cross_times is not None else None)
        else:
            memory_kv = [None] * len(self.decoder)
        for i, layer in enumerate(self.decoder):
            x, st = layer(
                x, rope=rope, group=group, modality=modality, memory=memory,
                memory_kv=memory_kv[i], memory_mask=mem_attn,
                token_mask=token_mask, cache=cache.self_attn[i] if cache is not None else None, plan=plan,
                cross_rope=cross_rope,
            )
            if st is not None:
                stats.append(st)
        if cache is not None and cache.clock is not None:
            cache.clock.advance(length)
        return self.dec_norm(x), stats

    def head_logits(self, modality: int, h: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, Q_out, V + 4) of target ``modality`` from decoder states ``h`` (N, d).

        Single-stream: Q_out = 1; delay mode: the Q parallel heads; sub-decoder: teacher-forced on ``codes``
        (N, Q), the frame being predicted.
        """
        spec = self.vocab[modality]
        head = self.heads[spec.name]
        if isinstance(head, DepthDecoder):
            if codes is None:
                raise ValueError("head_logits: the sub-decoder needs the target frame codes")
            return head(h, codes[:, : spec.codebooks])
        tied = None
        if head.weight is None:
            tied = torch.stack([self.embed.table(modality, q) for q in range(spec.codebooks)])
        return head(h, tied)

    # --- training ----------------------------------------------------------------------------------------
    def _teacher_forcing(self, batch: Batch, multi_target: bool | None = None) -> tuple[torch.Tensor, ...]:
        """Decoder inputs (B, L, Q), input mask (B, L), targets (B, L, Q), target validity (B, L, Q).

        ``multi_target``: whether some row has a multi-codebook target, when known on the host (else read back).
        """
        tgt, tmask, mod = batch.tgt_tokens, batch.tgt_mask, batch.tgt_modality
        b, t, q = tgt.shape
        dev = tgt.device
        lengths = tmask.sum(1)
        n_cb = self._codebooks[mod]
        col_ok = torch.arange(q, device=dev)[None, :] < n_cb[:, None]  # (B, Q)
        dec_in, targets, in_mask = tgt[:, :-1], tgt[:, 1:], tmask[:, 1:]
        valid = in_mask[:, :, None] & col_ok[:, None, :]
        multi = n_cb > 1
        if self.config.codebook_mode != "delay" or q == 1 or not (
                bool(multi.any()) if multi_target is None else multi_target):
            return dec_in, in_mask, targets, valid
        delayed = apply_delay(tgt, self._bos[mod], self._pad[mod])  # (B, T + Q - 1, Q)
        span = t + q - 2
        pos = torch.arange(1, span + 1, device=dev)[None, :, None] - torch.arange(q, device=dev)[None, None, :]
        d_valid = (pos >= 1) & (pos <= (lengths - 1)[:, None, None]) & col_ok[:, None, :]
        d_mask = torch.arange(span, device=dev)[None, :] < (lengths + n_cb - 2)[:, None]
        extra = span - (t - 1)
        pad = self._pad[mod][:, None, None].expand(b, extra, q)
        s_in = torch.cat([dec_in, pad], 1)
        s_tg = torch.cat([targets, pad], 1)
        s_mask = F.pad(in_mask, (0, extra))
        s_valid = F.pad(valid, (0, 0, 0, extra))
        m3 = multi[:, None, None]
        return (torch.where(m3, delayed[:, :-1], s_in), torch.where(multi[:, None], d_mask, s_mask),
                torch.where(m3, delayed[:, 1:], s_tg), torch.where(m3, d_valid, s_valid))

    def host_plan(self, batch: Batch) -> HostPlan | None:
        """The :class:`HostPlan` of ``batch`` from its :class:`~musicmoe.models.batch.BatchInfo` (and the learned
        position tables checked against its lengths), or ``None`` without an info or when its rows are not
        ordered by target modality (see :meth:`group_rows`)."""
        info = batch.info
        if info is None or len(info.task) != len(batch) or list(info.tgt_modality) != sorted(info.tgt_modality):
            return None
        if not info.task or min(info.task) < 0:
            return None
        cb = [spec.codebooks for spec in self.vocab]
        s_len, t_len, q = batch.src_tokens.shape[1], batch.tgt_tokens.shape[1], batch.tgt_tokens.shape[2]
        multi = any(cb[m] > 1 for m in info.tgt_modality)
        delay = self.config.codebook_mode == "delay" and q > 1 and multi
        # decoder inputs: targets without their last frame; in delay mode Q - 1 more steps for multi-codebook rows
        dec = [n - 1 + (cb[m] - 1 if delay and cb[m] > 1 else 0) for n, m in zip(info.tgt_lengths, info.tgt_modality)]
        dec_len = t_len + q - 2 if delay else t_len - 1
        src = [max(n, 1) for n in info.src_lengths]  # a row without source keeps position 0 (see encode)
        if self.positions is not None:
            for m, n in zip(info.src_modality, src):
                self.positions.check(m, n)
            for m, n in zip(info.tgt_modality, dec):
                self.positions.check(m, n)
        rows = [0] * len(MODALITIES)
        for m in info.tgt_modality:
            rows[m] += 1
        return HostPlan(src_padded=any(n < max(s_len, 1) for n in src), dec_padded=any(n < dec_len for n in dec),
                        rows_per_modality=tuple(rows), multi_target=multi, tasks=tuple(sorted(set(info.task))))

    @staticmethod
    def group_rows(batch: Batch) -> Batch:
        """``batch`` with its rows ordered by target modality (stable; a device ``argsort``, no host sync), when
        its :class:`BatchInfo` says they are not; without an info the batch is returned unchanged."""
        info = batch.info
        if info is None or list(info.tgt_modality) == sorted(info.tgt_modality):
            return batch
        order = sorted(range(len(info.tgt_modality)), key=lambda i: info.tgt_modality[i])
        return batch.select_rows(torch.argsort(batch.tgt_modality, stable=True), order)

    def forward(self, batch: Batch, return_logits: bool = False) -> ModelOutput:
        """Teacher-forced loss on ``batch`` (see :class:`ModelOutput` and, for host syncs, the module docstring)."""
        cfg = self.config
        if cfg.validate_inputs:
            batch.check(self.vocab)
        host = None
        if not return_logits:
            batch = self.group_rows(batch)
            host = self.host_plan(batch)
        return self._forward(batch, host, return_logits)

    def compile_forward(self, **kwargs) -> None:
        """``torch.compile`` the teacher-forced pass after planning (``kwargs`` go to ``torch.compile``).

        Row grouping and the host plan stay eager, so the compiled code sees only the plan's few values (padding
        flags, rows per target modality, task ids), not per-row lengths: varying batches then recompile rarely.
        Parameter names and checkpoints are unchanged.
        """
        self._forward = torch.compile(self._forward, **kwargs)

    def _forward(self, batch: Batch, host: HostPlan | None, return_logits: bool) -> ModelOutput:
        cfg = self.config
        memory, mem_mask = self.encode(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality,
                                       host=host, src_features=batch.src_features, src_rows=batch.src_rows,
                                       info=batch.info)
        dec_in, in_mask, targets, valid = self._teacher_forcing(batch, None if host is None else host.multi_target)
        times = self.cross_times(batch.src_modality, batch.tgt_modality, memory.shape[1])
        info = batch.info
        if times is not None and info is not None and len(info.tgt_modality) == batch.tgt_modality.shape[0] and not any(
                (sm, tm) == (modality_index("audio"), modality_index("midi"))
                for sm, tm in zip(info.src_modality, info.tgt_modality)):
            times = None  # no aligned row (known on the host): skip the rotations
        hidden, stats = self.decode(dec_in, batch.tgt_modality, memory=memory, memory_mask=mem_mask,
                                    token_mask=in_mask, host=host, tgt_rows=batch.tgt_rows, cross_times=times)
        b, length, d = hidden.shape
        q_max = targets.shape[2]
        n_pred = (batch.tgt_mask.sum(1) - 1).clamp_min(0)
        logits_out: dict[str, torch.Tensor] = {}
        if host is not None:  # rows ordered by target modality: every head on its contiguous rows, padding included
            present = list(host.rows_per_modality)
            parts, r0 = [], 0
            hidden_parts = hidden.split(present)  # one concatenation backward, no zero-filled slice gradients
            for m, spec in enumerate(self.vocab):
                if present[m] == 0:
                    continue
                r1, cb = r0 + present[m], spec.codebooks
                codes = targets[r0:r1, :, :cb].reshape(-1, cb)
                logits = self.head_logits(m, hidden_parts[m].reshape(-1, d), codes)
                ce = F.cross_entropy(logits.float().reshape(-1, spec.table_size), codes.reshape(-1),
                                     reduction="none", label_smoothing=cfg.label_smoothing)
                parts.append((ce.view(r1 - r0, length, cb) * valid[r0:r1, :, :cb]).sum((1, 2)) / cb)
                r0 = r1
            row_ce = torch.cat(parts) if len(parts) > 1 else parts[0]
        else:
            row_ce = hidden.new_zeros(b, dtype=torch.float32)
            present = torch.bincount(batch.tgt_modality, minlength=len(MODALITIES)).tolist()
            flat_h, flat_t, flat_v = hidden.reshape(-1, d), targets.reshape(-1, q_max), valid.reshape(-1, q_max)
            row_of = batch.tgt_modality[:, None].expand(b, length).reshape(-1)
            for m, spec in enumerate(self.vocab):
                if present[m] == 0:
                    continue
                sel = (in_mask.reshape(-1) & (row_of == m)).nonzero().squeeze(1)
                codes = flat_t.index_select(0, sel)[:, : spec.codebooks]
                ok = flat_v.index_select(0, sel)[:, : spec.codebooks]
                logits = self.head_logits(m, flat_h.index_select(0, sel), codes)
                ce = F.cross_entropy(logits.float().reshape(-1, spec.table_size), codes.reshape(-1),
                                     reduction="none", label_smoothing=cfg.label_smoothing).view(codes.shape)
                row_ce.index_add_(0, torch.div(sel, length, rounding_mode="floor"), (ce * ok).sum(1) / spec.codebooks)
                if return_logits:
                    logits_out[spec.name] = logits
        n_total = n_pred.sum().clamp_min(1)
        ce_loss = row_ce.sum() / n_total
        if torch.is_grad_enabled():  # heads of absent target modalities get zero gradients, so that DDP/DeepSpeed
            for m, spec in enumerate(self.vocab):  # need no find_unused_parameters
                if present[m] == 0:  # one sum over the head's parameters (a flat concatenation)
                    flat = torch.cat([p.reshape(-1) for p in self.heads[spec.name].parameters()])
                    ce_loss = ce_loss + 0.0 * flat.sum()
        zero = ce_loss.new_zeros(())
        routed = cfg.top_k > 0 and bool(stats)  # hard routing has no router losses
        aux = torch.stack([s.aux_loss for s in stats]).mean() if routed else zero
        z = torch.stack([s.z_loss for s in stats]).mean() if routed else zero
        loss = ce_loss
        if cfg.top_k > 0:
            loss = loss + cfg.aux_loss_weight * aux + cfg.z_loss_weight * z
        ctc = self._ctc_loss(memory, mem_mask, batch) if len(self.ctc_heads) else None
        if ctc is not None:
            loss = loss + cfg.ctc_weight * ctc

        def split(key: torch.Tensor, values: Sequence[int] | None) -> dict[int, torch.Tensor]:
            """CE per value of the row ``key``; ``values``: its distinct values (>= 0, sorted) known on the host."""
            if values is not None:
                n = values[-1] + 1
                sums = row_ce.new_zeros(n).index_add_(0, key, row_ce)
                counts = n_pred.new_zeros(n).index_add_(0, key, n_pred)
                return {v: sums[v] / counts[v].clamp_min(1) for v in values}
            out = {}
            for v in key.unique().tolist():
                rows = key == v
                out[int(v)] = row_ce[rows].sum() / n_pred[rows].sum().clamp_min(1)
            return out

        per_task = split(batch.task, None if host is None else host.tasks)
        mods = None if host is None else [m for m, r in enumerate(host.rows_per_modality) if r]
        per_mod = {MODALITIES[k]: v for k, v in split(batch.tgt_modality, mods).items()}
        metrics: dict[str, torch.Tensor] = {"ce_loss": ce_loss.detach(), "tokens": n_total.detach()}
        if ctc is not None:
            metrics["ctc_loss"] = ctc.detach()
        if stats:
            metrics["moe/aux_loss"] = aux.detach()
            metrics["moe/z_loss"] = z.detach()
            if all(s is stats[0] for s in stats):  # one shared routing plan: the same statistics in every layer
                n = len(stats)
                dropped, assigned, load = stats[0].dropped * n, stats[0].assignments * n, stats[0].group_load()
            else:
                dropped = torch.stack([s.dropped for s in stats]).sum()
                assigned = torch.stack([s.assignments for s in stats]).sum()
                load = torch.stack([s.group_load() for s in stats]).mean(0)  # (G, E)
            metrics["moe/dropped"] = dropped.detach()
            metrics["moe/dropped_frac"] = (dropped.float() / assigned.clamp_min(1).float()).detach()
            names = ["shared"] if cfg.shared_across_modalities else list(MODALITIES)
            for g, gname in enumerate(names):
                for e in range(load.shape[1]):
                    metrics[f"moe/load/{gname}/{e}"] = load[g, e].detach()
        return ModelOutput(loss=loss, ce_loss=ce_loss, loss_per_task=per_task, loss_per_modality=per_mod,
                           metrics=metrics, moe_stats=stats, logits=logits_out if return_logits else None)

    def ctc_log_probs(self, memory: torch.Tensor, name: str) -> torch.Tensor:
        """(N, S * ctc_upsample, V + 4) float32 label log-probabilities of the CTC head of target modality ``name``
        over encoder outputs ``memory`` (N, S, d); a clear error when the model has no such head."""
        if name not in self.ctc_heads:
            have = ", ".join(self.ctc_heads) or "none (model.ctc_weight = 0)"
            raise ValueError(f"CTC of a {name} target needs a CTC head for {name}; this model has: {have}")
        logits = self.ctc_heads[name](memory).float()
        n, s = logits.shape[:2]
        return logits.view(n, s * self.config.ctc_upsample, self.vocab[name].table_size).log_softmax(-1)

    def _ctc_loss(self, memory: torch.Tensor, mem_mask: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Auxiliary CTC loss of the rows with a single-codebook target (see the module docstring): per target
        token, averaged over those rows; 0 (with zero gradients for every CTC head) when the batch has none. It
        selects the rows with ``nonzero`` (a host sync per step; only with ``model.ctc_weight > 0``)."""
        up = self.config.ctc_upsample
        content = (batch.tgt_mask.sum(1) - 2).clamp_min(0)  # target tokens between BOS and EOS
        src_len = mem_mask.sum(1) * up
        per_row: list[torch.Tensor] = []
        unused = memory.new_zeros((), dtype=torch.float32)
        for name, head in self.ctc_heads.items():
            m = modality_index(name)
            rows = (batch.tgt_modality == m).nonzero().squeeze(1)
            if rows.numel() == 0:
                unused = unused + 0.0 * sum(p.sum() for p in head.parameters())
                continue
            spec = self.vocab[m]
            logp = self.ctc_log_probs(memory.index_select(0, rows), name).transpose(0, 1)  # (S * up, n, V)
            targets = batch.tgt_tokens.index_select(0, rows)[:, 1:, 0]
            lengths = content.index_select(0, rows)
            if name == "midi" and self._onset_ids is not None:
                targets, lengths = note_on_labels(targets, lengths, self._onset_ids)
            loss = F.ctc_loss(logp, targets, src_len.index_select(0, rows), lengths, blank=spec.pad_id,
                              reduction="none", zero_infinity=True)
            per_row.append(loss / lengths.clamp_min(1))
        if not per_row:
            return unused
        return torch.cat(per_row).mean() + unused

    # --- generation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        src_tokens: torch.Tensor,
        src_mask: torch.Tensor,
        src_modality: torch.Tensor | Sequence[int | str] | int | str,
        tgt_modality: torch.Tensor | Sequence[int | str] | int | str,
        max_len: int,
        strategy: str = "greedy",
        beam_size: int = 4,
        top_p: float = 0.9,
        temperature: float = 1.0,
        use_cache: bool = True,
        min_len: int = 0,
        length_penalty: float = 1.0,
        generator: torch.Generator | None = None,
        src_features: torch.Tensor | None = None,
        src_rows: torch.Tensor | None = None,
        tgt_rows: torch.Tensor | None = None,
        compile_step: bool | str = False,
        ctc_weight: float = 0.5,
    ) -> list[torch.Tensor]:
        """Translate a padded source batch; see :func:`musicmoe.models.generation.generate`."""
        return generate(self, src_tokens, src_mask, src_modality, tgt_modality, max_len, strategy=strategy,
                        beam_size=beam_size, top_p=top_p, temperature=temperature, use_cache=use_cache,
                        min_len=min_len, length_penalty=length_penalty, generator=generator,
                        src_features=src_features, src_rows=src_rows, tgt_rows=tgt_rows, compile_step=compile_step,
                        ctc_weight=ctc_weight)

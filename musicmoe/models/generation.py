"""Decoding for ``Translator.generate``: greedy, nucleus (top-p) sampling and beam search; CTC and CTC rescoring.

The batch is split by target modality; each part is decoded with a *stepper* that knows its output layout:

* single-stream (lmx, midi): one token per step;
* multi-codebook, sub-decoder mode: one frame per main-decoder step, its Q codes chosen in turn by the
  depth decoder;
* multi-codebook, delay mode: one delayed position per step (Q parallel heads); the frame with code-0 EOS
  ends the sequence, ``Q - 2`` more steps finish the codebooks of the last frame.

Never generated: PAD and BOS; EOS only on codebook 0 (and not before ``min_len``); codebooks >= 1 produce
content ids only. Beam search scores codebook 0 by beam and completes the other codebooks of a frame greedily
(scores add their log-probabilities); hypotheses are ranked by ``score / (length + 1) ** length_penalty``.
``use_cache=False`` re-runs the whole decoder over the prefix every step (same tokens, slower): the reference
for the KV-cache test and the decoding benchmark.

For single-stream targets with an auxiliary CTC head (``model.ctc_weight > 0``): ``ctc`` is the head's best path
(argmax at every upsampled source position, repeats merged, blanks dropped: no decoder, it cannot loop); ``rescore``
decodes greedily with the attention decoder too and keeps, per row, the one of the two hypotheses with the higher
``(1 - ctc_weight) * attention log-prob + ctc_weight * CTC log-likelihood`` (attention rescoring of the hybrid
CTC/attention recipe, with the two best paths as the candidates).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from musicmoe.models.batch import check_tokens
from musicmoe.models.codebooks import DepthDecoder
from musicmoe.models.vocab import MODALITIES, ModalitySpec, modality_index

if TYPE_CHECKING:
    from musicmoe.models.translator import CrossTimes, Translator

STRATEGIES = ("greedy", "beam", "top_p", "ctc", "rescore")
CTC_STRATEGIES = ("ctc", "rescore")
NEG_INF = float("-inf")
Picker = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]


def make_picker(strategy: str, temperature: float, top_p: float, generator: torch.Generator | None) -> Picker:
    """``pick(logits (n, V), need_logp) -> (ids (n,), log-probs (n,) or None)``: argmax, or nucleus sampling
    for ``top_p``."""

    def pick(logits: torch.Tensor, need_logp: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = logits.float()
        if strategy == "top_p":
            probs = (logits / temperature).softmax(-1)
            p_sorted, i_sorted = probs.sort(-1, descending=True)
            keep = (p_sorted.cumsum(-1) - p_sorted) < top_p  # the most likely id is always kept
            choice = torch.multinomial(p_sorted * keep, 1, generator=generator)
            ids = i_sorted.gather(-1, choice).squeeze(-1)
        else:
            ids = logits.argmax(-1)
        if not need_logp:
            return ids, None
        return ids, logits.log_softmax(-1).gather(-1, ids[:, None]).squeeze(-1)

    return pick


END_CHECK = 16  # decoding steps between two read-backs of "has every row ended?" (one host sync each)


def _blocking_bias(size: int, ids: Sequence[int], device) -> torch.Tensor:
    """(size,) additive logit bias: -inf at ``ids``, 0 elsewhere."""
    bias = torch.zeros(size, device=device)
    bias[list(ids)] = NEG_INF
    return bias


def _force(logits: torch.Tensor, rows: torch.Tensor, only: torch.Tensor) -> torch.Tensor:
    """Rows in ``rows`` (bool) get the logits ``only`` (:func:`_only`: one allowed token), on the device."""
    return torch.where(rows[:, None], only, logits)


def _only(size: int, token: int, device) -> torch.Tensor:
    """(size,) logits that allow ``token`` alone."""
    row = torch.full((size,), NEG_INF, device=device)
    row[token] = 0.0
    return row


class _Stepper(ABC):
    """Per-target-modality decoding rules and state (one row per hypothesis)."""

    def __init__(self, model: Translator, modality: int, n: int, max_len: int, min_len: int, device) -> None:
        self.model, self.m = model, modality
        self.spec: ModalitySpec = model.vocab[modality]
        self.q_max = model.vocab.max_codebooks
        self.n, self.max_len, self.min_len = n, max_len, min_len
        self.finished = torch.zeros(n, dtype=torch.bool, device=device)
        self.length = torch.full((n,), max_len, dtype=torch.long, device=device)
        self.total_steps = max_len
        sp, v = self.spec, self.spec.table_size
        self._bias_first = _blocking_bias(v, [sp.pad_id, sp.bos_id], device)  # PAD/BOS never generated
        self._bias_first_no_eos = _blocking_bias(v, [sp.pad_id, sp.bos_id, sp.eos_id], device)  # before min_len
        self._bias_content = _blocking_bias(v, [sp.pad_id, sp.bos_id, sp.eos_id, sp.sep_id], device)
        self._pad_only = _only(v, sp.pad_id, device)  # finished rows may only pad
        self._eos_only = _only(v, sp.eos_id, device)

    def bos_frame(self) -> torch.Tensor:
        frame = torch.full((self.n, self.q_max), self.spec.pad_id, dtype=torch.long, device=self.finished.device)
        frame[:, : self.spec.codebooks] = self.spec.bos_id
        return frame

    def _frame(self, codes: torch.Tensor) -> torch.Tensor:
        frame = torch.full((codes.shape[0], self.q_max), self.spec.pad_id, dtype=torch.long, device=codes.device)
        frame[:, : codes.shape[1]] = codes
        return frame

    def _first_constraints(self, logits: torch.Tensor, produced: int | torch.Tensor) -> torch.Tensor:
        """Codebook-0 / single-stream rule after ``produced`` tokens (frames; an int, or a (1,) device tensor in the
        fused greedy step): no PAD/BOS, no EOS before ``min_len``; finished rows may only pad."""
        if isinstance(produced, torch.Tensor):
            bias = torch.where(produced < self.min_len, self._bias_first_no_eos, self._bias_first)
        else:
            bias = self._bias_first_no_eos if produced < self.min_len else self._bias_first
        return _force(logits + bias, self.finished, self._pad_only)  # on the device: no read-back

    def _content_only(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self._bias_content

    @abstractmethod
    def first_logits(self, h: torch.Tensor, step: int) -> torch.Tensor:
        """Logits of codebook 0 (or the single stream) at ``step`` from the decoder state ``h``."""

    @abstractmethod
    def complete(self, h: torch.Tensor, tok0: torch.Tensor, step: int, pick: Picker, need_logp: bool = False):
        """The full frame (n, Qmax) given code 0 / the token, and the log-probs of the codes chosen here
        (summed per row; only computed with ``need_logp``)."""

    def update(self, frame: torch.Tensor, step: int) -> None:
        new = (frame[:, 0] == self.spec.eos_id) & ~self.finished
        self.length = torch.where(new, step, self.length)
        self.finished |= new

    def update_(self, frame: torch.Tensor, pos: torch.Tensor) -> None:
        """:meth:`update` in place, at the device-side step ``pos`` (1,) (the fused greedy step)."""
        new = (frame[:, 0] == self.spec.eos_id) & ~self.finished
        self.length.copy_(torch.where(new, pos, self.length))
        self.finished.logical_or_(new)

    def reorder(self, index: torch.Tensor) -> None:
        self.finished = self.finished[index]
        self.length = self.length[index]

    def all_done(self) -> bool:
        """Whether every row has ended (reads one flag back from the device)."""
        return bool(self.finished.all())

    def results(self, seq: torch.Tensor, rows: torch.Tensor) -> list[torch.Tensor]:
        q = self.spec.codebooks
        out = []
        for r in rows.tolist():
            frames = seq[r, 1: 1 + int(self.length[r]), :q]
            out.append(frames[:, 0].clone() if not self.spec.multi_codebook else frames.T.contiguous())
        return out


class _SingleStepper(_Stepper):
    def first_logits(self, h: torch.Tensor, step: int) -> torch.Tensor:
        return self._first_constraints(self.model.head_logits(self.m, h)[:, 0].float(), step)

    def complete(self, h, tok0, step, pick, need_logp=False):
        return self._frame(tok0[:, None]), torch.zeros(tok0.shape[0], device=tok0.device)


class _DepthStepper(_Stepper):
    def first_logits(self, h: torch.Tensor, step: int) -> torch.Tensor:
        head = self.model.heads[self.spec.name]
        assert isinstance(head, DepthDecoder)
        prefix = torch.zeros(h.shape[0], 0, dtype=torch.long, device=h.device)
        return self._first_constraints(head.next_logits(h, prefix).float(), step)

    def complete(self, h, tok0, step, pick, need_logp=False):
        head = self.model.heads[self.spec.name]
        special = tok0 >= self.spec.vocab_size
        codes = torch.where(special, 0, tok0)[:, None]  # specials do not feed the depth decoder
        extra = torch.zeros(tok0.shape[0], device=tok0.device)
        for _ in range(1, self.spec.codebooks):
            ids, logp = pick(self._content_only(head.next_logits(h, codes).float()), need_logp)
            codes = torch.cat([codes, ids[:, None]], 1)
            if need_logp:
                extra = extra + torch.where(special, 0.0, logp)
        codes = torch.where(special[:, None], tok0[:, None], codes)
        codes[:, 0] = tok0
        return self._frame(codes), extra


class _DelayStepper(_Stepper):
    """Delayed positions p = 1..max_len + Q - 1; ``end[r]`` = position (= frame) of the code-0 EOS."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.total_steps = self.max_len + self.spec.codebooks - 1
        self.end = torch.full((self.n,), 1 << 40, dtype=torch.long, device=self.finished.device)
        self._logits: torch.Tensor | None = None

    def first_logits(self, h: torch.Tensor, step: int) -> torch.Tensor:
        p = step + 1
        self._logits = self.model.head_logits(self.m, h).float()  # (n, Q, V)
        logits = self._logits[:, 0] + (self._bias_first_no_eos if p - 1 < self.min_len else self._bias_first)
        ended = self.end < p
        if p == self.max_len + 1:
            logits = _force(logits, ~ended, self._eos_only)
        return _force(logits, ended, self._pad_only)

    def reorder(self, index: torch.Tensor) -> None:
        super().reorder(index)
        self.end = self.end[index]
        if self._logits is not None:
            self._logits = self._logits[index]

    def complete(self, h, tok0, step, pick, need_logp=False):
        s, p = self.spec, step + 1
        assert self._logits is not None
        end = torch.where((tok0 == s.eos_id) & (self.end > p), p, self.end)
        codes = [tok0]
        extra = torch.zeros(tok0.shape[0], device=tok0.device)
        for q in range(1, s.codebooks):
            j = p - q  # frame whose code q is produced now
            ids, logp = pick(self._content_only(self._logits[:, q]), need_logp)
            if j < 1:
                ids = torch.full_like(ids, s.bos_id)
            else:
                ids = torch.where(end == j, s.eos_id, torch.where(end < j, s.pad_id, ids))
                if need_logp:
                    extra = extra + torch.where(end > j, logp, 0.0)
            codes.append(ids)
        return self._frame(torch.stack(codes, 1)), extra

    def update(self, frame: torch.Tensor, step: int) -> None:
        p = step + 1
        self.end = torch.where((frame[:, 0] == self.spec.eos_id) & (self.end > p), p, self.end)
        self.length = torch.clamp(self.end - 1, max=self.max_len)
        self.finished = self.end + self.spec.codebooks - 2 <= p

    def results(self, seq: torch.Tensor, rows: torch.Tensor) -> list[torch.Tensor]:
        q = self.spec.codebooks
        cols = torch.arange(q, device=seq.device)
        out = []
        for r in rows.tolist():
            frames = torch.arange(1, int(self.length[r]) + 1, device=seq.device)
            out.append(seq[r][frames[:, None] + cols[None, :], cols[None, :]].T.contiguous())  # code q of frame j
        return out                                                                           # sits at j + q


def _stepper_class(model: Translator, spec: ModalitySpec) -> type[_Stepper]:
    if not spec.multi_codebook:
        return _SingleStepper
    return _DelayStepper if model.config.codebook_mode == "delay" else _DepthStepper


def _as_modality_tensor(value, b: int, device, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.to(device=device, dtype=torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b).clone()
    elif isinstance(value, (str, int)):
        t = torch.full((b,), modality_index(value), dtype=torch.long, device=device)
    else:
        t = torch.tensor([modality_index(v) for v in value], dtype=torch.long, device=device)
    if t.shape != (b,):
        raise ValueError(f"generate: {what} must give one modality per row ({b}), got shape {tuple(t.shape)}")
    if ((t < 0) | (t >= len(MODALITIES))).any():
        raise ValueError(f"generate: {what} values must be in 0..{len(MODALITIES) - 1}")
    return t


def _cached_step(model: Translator, tokens: torch.Tensor, tgt_mod: torch.Tensor, cache) -> torch.Tensor:
    """Decoder state (B, d) of the last of ``tokens`` (B, L, Qmax) continuing ``cache``."""
    return model.decode(tokens, tgt_mod, cache=cache)[0][:, -1]


AUTOTUNE = "max-autotune"


def _weights_state(model: Translator) -> tuple[tuple[int, int], ...]:
    """Where each parameter and buffer lives and how often it was written in place (``Tensor._version``): changes
    when training, ``load_state_dict`` or ``.to()`` touch the weights."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


# inductor settings of the CPU max-autotune step; set globally while it is traced and compiled, since dynamo decides
# at tracing whether parameters become constants (``torch.compile(options=...)`` reaches only inductor)
FROZEN_AUTOTUNE = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP"}


def _with_inductor_config(compiled: Callable, settings: dict) -> Callable:
    """``compiled`` run with inductor's config patched by ``settings`` (for the call that traces and compiles it)."""
    import torch._inductor.config as inductor_config

    def run(*args, **kwargs):
        with inductor_config.patch(settings):
            return compiled(*args, **kwargs)

    return run


def _compiled(model: Translator, fn: Callable, store_name: str, backend: str) -> Callable:
    """``fn`` compiled as one graph (``fullgraph``: a graph break is an error, static shapes), kept on the model under
    ``store_name`` per backend. With inductor on CUDA: ``reduce-overhead`` mode (CUDA graphs).

    ``backend="max-autotune"``: inductor choosing each matmul's kernel by timing, GEMM templates included, so that a
    bias, an activation or a neighbouring LayerNorm is fused into the matmul (on CUDA: Triton templates and CUDA
    graphs). On a CPU inductor's C++ GEMM template needs constant weights, so the weights are frozen into the compiled
    step (the C++ template for every matmul it supports, so that the compiled code does not depend on timings); it is
    compiled again when they change (:func:`_weights_state`)."""
    store = model.__dict__.setdefault(store_name, {})
    on_cuda = next(model.parameters()).is_cuda
    frozen = backend == AUTOTUNE and not on_cuda
    if frozen and backend in store and store.get("_frozen_state") != _weights_state(model):
        # dynamo keeps compiled code per function, guarded on the model's identity, not its values: drop it (the
        # function's code for every model and backend; each compiles again at its next use)
        from torch._dynamo.eval_frame import remove_from_cache

        remove_from_cache(fn)
        del store[backend]
    if backend not in store:
        if backend == AUTOTUNE and on_cuda:
            compiled = torch.compile(fn, fullgraph=True, dynamic=False, mode="max-autotune")
        elif frozen:
            # the options as well: they make this compiled code's backend differ from plain inductor's, whose
            # cached code must never be the frozen one
            compiled = _with_inductor_config(
                torch.compile(fn, fullgraph=True, dynamic=False, options=FROZEN_AUTOTUNE), FROZEN_AUTOTUNE)
            store["_frozen_state"] = _weights_state(model)
        else:
            mode = "reduce-overhead" if on_cuda and backend == "inductor" else None
            compiled = torch.compile(fn, fullgraph=True, dynamic=False, backend=backend, mode=mode)
        store[backend] = compiled
    return store[backend]


def compiled_step(model: Translator, backend: str = "inductor") -> Callable:
    """:func:`_cached_step` compiled as one graph for a static cache (see :func:`_compiled`)."""
    return _compiled(model, _cached_step, "_compiled_steps", backend)


_GREEDY = make_picker("greedy", 1.0, 1.0, None)


def _greedy_step(model: Translator, stepper: _Stepper, seq: torch.Tensor, tgt_mod: torch.Tensor, cache) -> None:
    """One greedy decoding step wholly on the device, over a static cache: the decoder step, the output head, the
    decoding rules and the argmax; the new frame is written into ``seq`` after the cache's position and the rows'
    end state is updated in place. Nothing is read back, and every call has the same shapes (one compiled graph:
    :func:`compiled_greedy_step`)."""
    pos = cache.clock.pos.clone()  # frames produced so far (the decoder call advances the clock)
    h = model.decode(seq.index_select(1, pos), tgt_mod, cache=cache)[0][:, -1]
    tok0, _ = _GREEDY(stepper.first_logits(h, pos))
    frame, _ = stepper.complete(h, tok0, pos, _GREEDY)
    stepper.update_(frame, pos)
    seq.index_copy_(1, pos + 1, frame[:, None])


def compiled_greedy_step(model: Translator, backend: str = "inductor") -> Callable:
    """:func:`_greedy_step` compiled as one graph (see :func:`_compiled`): the whole greedy step, so no operator runs
    between two steps."""
    return _compiled(model, _greedy_step, "_compiled_greedy_steps", backend)


def _decode_part(model: Translator, memory: torch.Tensor, mem_mask: torch.Tensor, m: int, max_len: int,
                 strategy: str, beam_size: int, pick: Picker, use_cache: bool, min_len: int,
                 length_penalty: float, tgt_rows: torch.Tensor | None = None,
                 cross_times: CrossTimes | None = None, compile_step: bool | str = False) -> list[torch.Tensor]:
    n = memory.shape[0]
    k = beam_size if strategy == "beam" else 1
    if k > 1:
        memory = memory.repeat_interleave(k, 0)
        mem_mask = mem_mask.repeat_interleave(k, 0)
        tgt_rows = tgt_rows.repeat_interleave(k, 0) if tgt_rows is not None else None
        cross_times = cross_times.repeat_interleave(k) if cross_times is not None else None
    rows = n * k
    dev = memory.device
    stepper = _stepper_class(model, model.vocab[m])(model, m, rows, max_len, min_len, dev)
    if model.positions is not None:
        model.positions.check(m, stepper.total_steps + 1)
    tgt_mod = torch.full((rows,), m, dtype=torch.long, device=dev)
    # the whole sequence preallocated (no per-step concatenation; shapes stay fixed for a compiled step)
    seq = stepper.bos_frame()[:, None, :].repeat(1, stepper.total_steps + 1, 1)
    cache = (model.decoder_cache(memory, mem_mask, stepper.total_steps + 1, tgt_rows, cross_times,
                                 rows_per_modality=tuple(rows if i == m else 0 for i in range(len(MODALITIES))),
                                 static=bool(compile_step))
             if use_cache else None)
    backend = compile_step if isinstance(compile_step, str) else "inductor"
    # greedy decoding of a single stream or a sub-decoder frame: the whole step (head and token choice included)
    # is one compiled graph; otherwise the decoder step alone
    fused = (compiled_greedy_step(model, backend) if compile_step and use_cache and strategy == "greedy" and k == 1
             and isinstance(stepper, (_SingleStepper, _DepthStepper)) else None)
    step_fn = compiled_step(model, backend) if compile_step and use_cache and fused is None else _cached_step
    scores = torch.zeros(n, k, device=dev)
    scores[:, 1:] = NEG_INF  # all beams start identical: expand only the first
    scores = scores.reshape(-1)
    for step in range(stepper.total_steps):
        if fused is not None:
            fused(model, stepper, seq, tgt_mod, cache)
            if (step + 1) % END_CHECK == 0 and stepper.all_done():
                seq = seq[:, : step + 2]
                break
            continue
        if cache is not None:
            h = step_fn(model, seq[:, step: step + 1], tgt_mod, cache)
        else:
            h = model.decode(seq[:, : step + 1], tgt_mod, memory=memory, memory_mask=mem_mask, tgt_rows=tgt_rows,
                             cross_times=cross_times)[0][:, -1]
        logits0 = stepper.first_logits(h, step)
        if k > 1:
            v = logits0.shape[1]
            cand = (scores[:, None] + logits0.log_softmax(-1)).view(n, k * v)
            top_s, top_i = cand.topk(k, dim=-1)
            src = (torch.div(top_i, v, rounding_mode="floor") + torch.arange(n, device=dev)[:, None] * k).reshape(-1)
            tok0 = (top_i % v).reshape(-1)
            seq, h = seq.index_select(0, src), h.index_select(0, src)
            stepper.reorder(src)
            if cache is not None:
                cache.reorder(src)
            frame, extra = stepper.complete(h, tok0, step, _GREEDY, need_logp=True)
            scores = top_s.reshape(-1) + extra
        else:
            tok0, _ = pick(logits0)
            frame, _ = stepper.complete(h, tok0, step, pick)
        stepper.update(frame, step)
        seq[:, step + 1] = frame
        # the end of every row is read back every END_CHECK steps only: rows that ended meanwhile are held at PAD
        # on the device, so the tokens are those of a check at every step
        if (step + 1) % END_CHECK == 0 and stepper.all_done():
            seq = seq[:, : step + 2]
            break
    if k > 1:
        norm = scores / (stepper.length.float() + 1.0) ** length_penalty
        best = norm.view(n, k).argmax(-1) + torch.arange(n, device=dev) * k
    else:
        best = torch.arange(n, device=dev)
    return stepper.results(seq, best)


def ctc_best_path(logp: torch.Tensor, mem_mask: torch.Tensor, up: int, spec: ModalitySpec,
                  max_len: int) -> list[torch.Tensor]:
    """The best path of CTC label log-probabilities ``logp`` (N, S * up, V + 4) of every row (see the module
    docstring), at most ``max_len`` ids each."""
    best = logp.argmax(-1)  # (N, S * up)
    valid = mem_mask.repeat_interleave(up, 1)
    changed = torch.ones_like(valid)
    changed[:, 1:] = best[:, 1:] != best[:, :-1]
    keep = valid & changed & (best < spec.vocab_size)  # blanks (PAD) and the other specials dropped
    return [row[k][:max_len] for row, k in zip(best, keep)]


def _attention_log_probs(model: Translator, memory: torch.Tensor, mem_mask: torch.Tensor, m: int,
                         hyps: Sequence[torch.Tensor], cross_times: CrossTimes | None) -> torch.Tensor:
    """(N,) summed log-probability of ``BOS hyp EOS`` under the attention decoder (teacher forced)."""
    spec = model.vocab[m]
    n, dev, q = len(hyps), memory.device, model.vocab.max_codebooks
    length = max(len(h) for h in hyps) + 1
    tokens = torch.full((n, length + 1, q), spec.pad_id, dtype=torch.long, device=dev)
    tokens[:, 0, 0] = spec.bos_id
    for r, h in enumerate(hyps):
        tokens[r, 1: len(h) + 1, 0] = h
        tokens[r, len(h) + 1, 0] = spec.eos_id
    lengths = torch.tensor([len(h) + 1 for h in hyps], device=dev)
    mask = torch.arange(length, device=dev)[None, :] < lengths[:, None]
    tgt_mod = torch.full((n,), m, dtype=torch.long, device=dev)
    h, _ = model.decode(tokens[:, :-1], tgt_mod, memory=memory, memory_mask=mem_mask, token_mask=mask,
                        cross_times=cross_times)
    logp = model.head_logits(m, h.reshape(n * length, -1))[:, 0].float().log_softmax(-1).view(n, length, -1)
    picked = logp.gather(-1, tokens[:, 1:, :1]).squeeze(-1)
    return (picked * mask).sum(1)


def _ctc_log_likelihood(logp: torch.Tensor, mem_mask: torch.Tensor, up: int, spec: ModalitySpec,
                        hyps: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N,) CTC log-likelihood of each hypothesis under label log-probabilities ``logp`` (N, S * up, V + 4)
    (-inf where no alignment fits)."""
    n, dev = len(hyps), logp.device
    width = max(1, max(len(h) for h in hyps))
    targets = torch.full((n, width), spec.pad_id, dtype=torch.long, device=dev)
    for r, h in enumerate(hyps):
        targets[r, : len(h)] = h
    nll = torch.nn.functional.ctc_loss(logp.transpose(0, 1), targets, mem_mask.sum(1) * up,
                                       torch.tensor([len(h) for h in hyps], device=dev), blank=spec.pad_id,
                                       reduction="none", zero_infinity=False)
    return -nll


def _ctc_decode_part(model: Translator, memory: torch.Tensor, mem_mask: torch.Tensor, m: int, max_len: int,
                     strategy: str, ctc_weight: float, use_cache: bool,
                     cross_times: CrossTimes | None) -> list[torch.Tensor]:
    spec, up = model.vocab[m], model.config.ctc_upsample
    logp = model.ctc_log_probs(memory, spec.name)  # once: for the best path and for rescoring
    ctc = ctc_best_path(logp, mem_mask, up, spec, max_len)
    if strategy == "ctc":
        return ctc
    att = _decode_part(model, memory, mem_mask, m, max_len, "greedy", 1, _GREEDY, use_cache, 0, 1.0,
                       cross_times=cross_times)
    n = len(att)
    both = list(att) + list(ctc)
    mem2, mask2 = torch.cat([memory, memory]), torch.cat([mem_mask, mem_mask])
    times2 = None
    if cross_times is not None:
        times2 = cross_times.index_select(torch.arange(n, device=memory.device).repeat(2))
    score = ((1.0 - ctc_weight) * _attention_log_probs(model, mem2, mask2, m, both, times2)
             + ctc_weight * _ctc_log_likelihood(torch.cat([logp, logp]), mask2, up, spec, both))
    return [att[r] if bool(score[r] >= score[n + r]) else ctc[r] for r in range(n)]


def generate(
    model: Translator,
    src_tokens: torch.Tensor,
    src_mask: torch.Tensor,
    src_modality,
    tgt_modality,
    max_len: int,
    *,
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
    """Decode every row of a padded source batch (``src_tokens`` (B, S, Qmax), ``src_mask`` (B, S)).

    ``src_modality``/``tgt_modality``: one modality (name or index) for all rows, or one per row.
    Returns one tensor per row with the generated content (EOS and specials stripped): (T,) ids for
    single-stream targets, (Q, T) codes for multi-codebook targets, ``T <= max_len`` (EOS ends early;
    ``min_len`` forbids EOS before that many tokens/frames). ``strategy``: ``greedy``, ``top_p`` (nucleus
    sampling with ``temperature``, reproducible with ``generator``) or ``beam`` (``beam_size``,
    ``length_penalty``), ``ctc`` or ``rescore`` (single-stream targets of a model with CTC heads; ``ctc_weight``
    weighs the CTC log-likelihood in ``rescore``, see the module docstring). ``src_features``/``src_rows``:
    continuous source inputs and image grid heights (as in :class:`~musicmoe.models.batch.Batch`); ``tgt_rows``
    (B,): grid heights of image targets to generate. Runs in eval mode (restored afterwards) without gradients.
    ``compile_step`` (with ``use_cache``): decode with a static cache and the step compiled as one graph (True:
    inductor, CUDA graphs on a GPU; a string names the ``torch.compile`` backend, or ``"max-autotune"``: inductor
    with autotuned GEMM templates that fuse bias and activation into the matmuls, weights frozen on a CPU, for
    inference); greedy decoding of single-stream and sub-decoder targets compiles the whole step, output head and
    token choice included; the tokens are those of the eager step.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"generate: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if max_len < 0 or min_len < 0:
        raise ValueError(f"generate: max_len and min_len must be >= 0, got {max_len}, {min_len}")
    if strategy == "beam" and beam_size < 1:
        raise ValueError(f"generate: beam_size must be >= 1, got {beam_size}")
    if strategy in CTC_STRATEGIES and not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"generate: ctc_weight must be in [0, 1], got {ctc_weight}")
    if strategy == "top_p" and not (0.0 < top_p <= 1.0 and temperature > 0.0):
        raise ValueError(f"generate: need 0 < top_p <= 1 and temperature > 0, got {top_p}, {temperature}")
    if src_tokens.ndim != 3 or src_mask.shape != src_tokens.shape[:2]:
        raise ValueError(f"generate: src_tokens must be (B, S, Q) with src_mask (B, S); got "
                         f"{tuple(src_tokens.shape)} and {tuple(src_mask.shape)}")
    b, dev = src_tokens.shape[0], src_tokens.device
    if src_tokens.shape[2] != model.vocab.max_codebooks:
        raise ValueError(f"generate: src_tokens has {src_tokens.shape[2]} codebook columns, the vocabulary "
                         f"needs {model.vocab.max_codebooks}")
    src_mod = _as_modality_tensor(src_modality, b, dev, "src_modality")
    tgt_mod = _as_modality_tensor(tgt_modality, b, dev, "tgt_modality")
    src_tokens = src_tokens.long()
    if model.config.validate_inputs:
        check_tokens(src_tokens, src_mod, model.vocab, "generate: src_tokens")
    if b == 0:
        return []
    if max_len == 0:
        return [torch.zeros((model.vocab[int(m)].codebooks, 0) if model.vocab[int(m)].multi_codebook else (0,),
                            dtype=torch.long, device=dev) for m in tgt_mod.tolist()]
    pick = make_picker(strategy, temperature, top_p, generator)
    was_training = model.training
    model.eval()
    try:
        memory, mem_mask = model.encode(src_tokens, src_mask.bool(), src_mod, tgt_mod, src_features=src_features,
                                        src_rows=None if src_rows is None else src_rows.to(dev).long())
        times = model.cross_times(src_mod, tgt_mod, memory.shape[1])
        results: list[torch.Tensor | None] = [None] * b
        for m in tgt_mod.unique().tolist():
            rows = (tgt_mod == m).nonzero().squeeze(1)
            part_rows = None if tgt_rows is None else tgt_rows.to(dev).long().index_select(0, rows)
            part_times = times.index_select(rows) if times is not None else None
            if strategy in CTC_STRATEGIES:
                outs = _ctc_decode_part(model, memory.index_select(0, rows), mem_mask.index_select(0, rows), int(m),
                                        max_len, strategy, ctc_weight, use_cache, part_times)
            else:
                outs = _decode_part(model, memory.index_select(0, rows), mem_mask.index_select(0, rows), int(m),
                                    max_len, strategy, beam_size, pick, use_cache, min_len, length_penalty,
                                    part_rows, part_times, compile_step)
            for r, o in zip(rows.tolist(), outs):
                results[r] = o
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]

"""Per-modality token vocabularies of the translator.

Modalities are indexed in the fixed order ``MODALITIES = ("image", "lmx", "midi", "audio")``.
Each modality has ``vocab_size`` content ids ``0..V-1`` per codebook and ``codebooks`` parallel streams
(``Q > 1``: multi-codebook, e.g. RQ-VAE image codes or EnCodec audio codes; ``Q == 1``: a single stream,
e.g. LMX or MIDI event ids). Four special ids are appended to every codebook:
``PAD = V``, ``BOS = V + 1``, ``EOS = V + 2``, ``SEP = V + 3``; each codebook table thus has ``V + 4`` rows.

In a :class:`~musicmoe.models.batch.Batch` every token is a row of ``Qmax = VocabSpec.max_codebooks`` ids;
a single-stream modality uses column 0 and holds its PAD id in the other columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

MODALITIES: tuple[str, ...] = ("image", "lmx", "midi", "audio")
MODALITY_INDEX: dict[str, int] = {m: i for i, m in enumerate(MODALITIES)}
N_SPECIALS = 4
SPECIAL_NAMES: tuple[str, ...] = ("PAD", "BOS", "EOS", "SEP")


def modality_index(modality: str | int) -> int:
    """Index of a modality given by name or index; raises ``ValueError`` for an unknown one."""
    if isinstance(modality, str):
        if modality not in MODALITY_INDEX:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        return MODALITY_INDEX[modality]
    idx = int(modality)
    if not 0 <= idx < len(MODALITIES):
        raise ValueError(f"modality index {idx} out of range 0..{len(MODALITIES) - 1}")
    return idx


@dataclass(frozen=True)
class ModalitySpec:
    """Vocabulary of one modality: ``vocab_size`` content ids per codebook, ``codebooks`` streams."""

    name: str
    vocab_size: int
    codebooks: int = 1

    def __post_init__(self) -> None:
        if self.name not in MODALITY_INDEX:
            raise ValueError(f"ModalitySpec.name: unknown modality {self.name!r}; expected one of {MODALITIES}")
        if self.vocab_size < 1:
            raise ValueError(f"ModalitySpec({self.name}).vocab_size must be >= 1, got {self.vocab_size}")
        if self.codebooks < 1:
            raise ValueError(f"ModalitySpec({self.name}).codebooks must be >= 1, got {self.codebooks}")

    @property
    def index(self) -> int:
        return MODALITY_INDEX[self.name]

    @property
    def pad_id(self) -> int:
        return self.vocab_size

    @property
    def bos_id(self) -> int:
        return self.vocab_size + 1

    @property
    def eos_id(self) -> int:
        return self.vocab_size + 2

    @property
    def sep_id(self) -> int:
        return self.vocab_size + 3

    @property
    def table_size(self) -> int:
        """Rows per codebook table: content ids plus the four specials."""
        return self.vocab_size + N_SPECIALS

    @property
    def multi_codebook(self) -> bool:
        return self.codebooks > 1


@dataclass(frozen=True)
class VocabSpec:
    """The four modality vocabularies, in ``MODALITIES`` order."""

    image: ModalitySpec
    lmx: ModalitySpec
    midi: ModalitySpec
    audio: ModalitySpec

    def __post_init__(self) -> None:
        for name in MODALITIES:
            spec = getattr(self, name)
            if not isinstance(spec, ModalitySpec) or spec.name != name:
                raise ValueError(f"VocabSpec.{name} must be a ModalitySpec named {name!r}, got {spec!r}")

    @classmethod
    def build(
        cls,
        lmx_vocab_size: int,
        midi_vocab_size: int,
        image_codebooks: int = 4,
        image_codebook_size: int = 1024,
        audio_codebooks: int = 4,
        audio_codebook_size: int = 1024,
    ) -> VocabSpec:
        """The usual spec: multi-codebook image/audio codes, single-stream LMX/MIDI ids."""
        return cls(
            image=ModalitySpec("image", image_codebook_size, image_codebooks),
            lmx=ModalitySpec("lmx", lmx_vocab_size, 1),
            midi=ModalitySpec("midi", midi_vocab_size, 1),
            audio=ModalitySpec("audio", audio_codebook_size, audio_codebooks),
        )

    def __getitem__(self, modality: str | int) -> ModalitySpec:
        return getattr(self, MODALITIES[modality_index(modality)])

    def __iter__(self):
        return (getattr(self, m) for m in MODALITIES)

    @property
    def max_codebooks(self) -> int:
        """``Qmax``: width of the token axis of a batch."""
        return max(s.codebooks for s in self)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {m: asdict(getattr(self, m)) for m in MODALITIES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> VocabSpec:
        unknown = set(data) - set(MODALITIES)
        missing = set(MODALITIES) - set(data)
        if unknown or missing:
            raise ValueError(f"VocabSpec.from_dict: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        specs = {}
        for m in MODALITIES:
            fields = dict(data[m])
            fields.setdefault("name", m)
            bad = set(fields) - {"name", "vocab_size", "codebooks"}
            if bad:
                raise ValueError(f"VocabSpec.from_dict: unknown keys {sorted(bad)} for modality {m!r}")
            specs[m] = ModalitySpec(**fields)
        return cls(**specs)

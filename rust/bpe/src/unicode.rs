//! Character classes for the hand-written pre-tokenizers (filled in by the pre-tokenizer helper).

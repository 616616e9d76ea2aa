//! Sentence embeddings on candle (multilingual-e5-small by default).

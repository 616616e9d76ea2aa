//! The local LLM engine: GGUF loading, our own transformer per architecture,
//! tokenizer and chat template from the model file, generation.

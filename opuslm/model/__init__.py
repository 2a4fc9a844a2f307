"""The multi-stream language model: delay interleaving (`delay`), the model around a Hugging Face
causal-LM body (`lm`) and KV-cached, modality-constrained decoding (`generate`)."""
